"""Edits of a ComfyUI API graph (``{node id: {"class_type", "inputs"}}``) for the CoBSAT run: find a node by type, set an
input (or the primitive node it links to), rebuild the image inputs for N demos, and put the run's settings and model
names in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thinkdiff.errors import ThinkDiffError

from .config import ComfyUIConfig, GenerateConfig

IMAGE_NODES = ("LoadImage", "ImageBatch")
# (node type, input) of each model name in [comfyui].
MODEL_INPUTS = {"vlm": ("ThinkDiffVLMLoader", "model"), "aligner": ("ThinkDiffAlignerLoader", "aligner_name"),
                "unet": ("UNETLoader", "unet_name"), "clip_l": ("DualCLIPLoader", "clip_name1"),
                "t5": ("DualCLIPLoader", "clip_name2"), "vae": ("VAELoader", "vae_name")}
Graph = dict[str, Any]


def node_of_type(graph: Graph, class_type: str) -> str:
    ids = [k for k, node in graph.items() if node["class_type"] == class_type]
    if len(ids) != 1:
        raise ThinkDiffError(f"the workflow must have exactly one {class_type} node, it has {len(ids)}")
    return ids[0]


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def set_input(graph: Graph, node_id: str, name: str, value: Any) -> None:
    """Set an input, or the value of the primitive node it is linked to (the workflows' width/height nodes)."""
    current = graph[node_id]["inputs"].get(name)
    if is_link(current) and "value" in graph[current[0]]["inputs"]:
        graph[current[0]]["inputs"]["value"] = value
    else:
        graph[node_id]["inputs"][name] = value


def set_images(graph: Graph, node_id: str, names: Sequence[str]) -> None:
    """Feed ``names`` (uploaded images, in order) to ``node_id``'s ``images`` input, replacing its LoadImage/ImageBatch
    inputs with N LoadImage nodes joined by ImageBatch nodes."""
    old, todo = set(), [graph[node_id]["inputs"].pop("images", None)]
    while todo:
        link = todo.pop()
        if is_link(link) and graph[link[0]]["class_type"] in IMAGE_NODES and link[0] not in old:
            old.add(link[0])
            todo += list(graph[link[0]]["inputs"].values())
    for key in old:
        del graph[key]
    if any(is_link(v) and v[0] in old for node in graph.values() for v in node["inputs"].values()):
        raise ThinkDiffError("the workflow uses its input images elsewhere too; the comfyui backend cannot rebuild them")
    next_id = max(int(k) for k in graph if k.isdigit()) + 1
    current = None
    for offset, name in enumerate(names):
        load = str(next_id + 2 * offset)
        graph[load] = {"class_type": "LoadImage", "inputs": {"image": name}}
        if current is None:
            current = [load, 0]
            continue
        batch = str(next_id + 2 * offset + 1)
        graph[batch] = {"class_type": "ImageBatch", "inputs": {"image1": current, "image2": [load, 0]}}
        current = [batch, 0]
    graph[node_id]["inputs"]["images"] = current


def configure(graph: Graph, settings: GenerateConfig, models: ComfyUIConfig) -> None:
    """Put the run's sampling settings and model names (the parts equal for every sample) into the workflow graph."""
    encode = node_of_type(graph, "ThinkDiffVLMEncode")
    graph[encode]["inputs"].update(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                   top_p=settings.top_p, greedy=False, stop_at_eos=False, picture_labels="on",
                                   min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    graph[node_of_type(graph, "ThinkDiffFluxConditioning")]["inputs"]["guidance"] = settings.guidance
    graph[node_of_type(graph, "KSampler")]["inputs"]["steps"] = settings.steps
    for node_type in ("EmptySD3LatentImage", "ModelSamplingFlux"):
        node = node_of_type(graph, node_type)
        set_input(graph, node, "width", settings.width)
        set_input(graph, node, "height", settings.height)
    for setting, (node_type, name) in MODEL_INPUTS.items():
        if getattr(models, setting):
            graph[node_of_type(graph, node_type)]["inputs"][name] = getattr(models, setting)
