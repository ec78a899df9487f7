"""A ComfyUI base directory with tiny random models, and the loader swap that points workflows at them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from thinkdiff.workflow_api import ui_to_api

from .comfy_server import prepare_base
from .comfy_weights import FILES, write_all
from .paths import REPO
from .tiny_models import TINY_VISION_TOWER, make_aligner, make_qwen2vl, make_vision

TINY_VLM = "tiny-random-Qwen2-VL"
TINY_ALIGNER = "tiny-random-aligner.safetensors"
TINY_CLIP_ALIGNER = "tiny-random-clip-aligner.safetensors"
TINY_VISION = "tiny-random-blip2-vision.safetensors"
WORKFLOWS = REPO / "workflows"


def _tiny(name: str) -> str:
    return Path(FILES[name]).name


def _unet(inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The tiny CogVideoX has native keys: the stock UNETLoader loads it. Tiny Flux and Chroma need the test loader that
    reads their config (ComfyUI's detection fixes their real sizes)."""
    name = inputs["unet_name"].lower()
    if "cogvideox" in name:
        return "UNETLoader", {**inputs, "unet_name": _tiny("cogvideox")}
    return "TinyUNETLoader", {"unet_name": _tiny("chroma" if "chroma" in name else "flux")}


TINY_LOADERS = {
    "UNETLoader": _unet,
    # The stock loader reads the tiny checkpoints as they are (ComfyUI sizes SD3 from its weights, LTX-Video from the
    # file's config metadata).
    "CheckpointLoaderSimple": lambda inputs: ("CheckpointLoaderSimple", {
        "ckpt_name": _tiny("ltxv" if "ltx" in inputs["ckpt_name"].lower() else "sd3")}),
    "DualCLIPLoader": lambda inputs: ("TinyFluxDualCLIPLoader", {"clip_name1": _tiny("clip_l"), "clip_name2": _tiny("t5xxl")}),
    "CLIPLoader": lambda inputs: ("TinyT5CLIPLoader", {"clip_name": _tiny("t5xxl"), "type": inputs["type"]}),
    # SD3's T5 alone: ComfyUI pads CLIP-L/G's states to a hard-coded 4096, which a tiny T5 cannot follow (the CLIP-L/G
    # part of SD3's conditioning is tested without ComfyUI, tests/test_t5_families.py)
    "TripleCLIPLoader": lambda inputs: ("TinyT5CLIPLoader", {"clip_name": _tiny("t5xxl"), "type": "sd3"}),
    "VAELoader": lambda inputs: (("TinyCogVideoXVAELoader", {"vae_name": _tiny("cogvideox_vae")})
                                 if "cogvideox" in inputs["vae_name"] else ("VAELoader", {"vae_name": "taef1"})),
    "ThinkDiffVLMLoader": lambda inputs: ("ThinkDiffVLMLoader", {**inputs, "model": TINY_VLM}),
    "ThinkDiffAlignerLoader": lambda inputs: ("ThinkDiffAlignerLoader", {
        "aligner_name": TINY_CLIP_ALIGNER if "clip" in inputs["aligner_name"] else TINY_ALIGNER}),
    "ThinkDiffVisionLoader": lambda inputs: ("ThinkDiffVisionLoader", {**inputs, "vision_name": TINY_VISION}),
}
VIDEO_LATENTS = ("EmptyHunyuanLatentVideo", "EmptyLTXVLatentVideo")
LATENTS = ("EmptySD3LatentImage", *VIDEO_LATENTS)


def make_tiny_base(base: Path) -> Path:
    """Base dir with the pack, the tiny-loader test pack, tiny random models and the workflows' input images."""
    prepare_base(base)
    models = base / "models"
    write_all(models)
    make_qwen2vl(models / "LLM" / TINY_VLM)
    make_aligner(models / "thinkdiff" / TINY_ALIGNER)
    make_aligner(models / "thinkdiff" / TINY_CLIP_ALIGNER, in_dim=TINY_VISION_TOWER["hidden_size"], variant="clip")
    make_vision(models / "thinkdiff" / TINY_VISION)
    for image in (WORKFLOWS / "images").glob("*.png"):
        shutil.copy(image, base / "input" / image.name)
    return base


def swap_to_tiny(api: dict[str, Any]) -> dict[str, Any]:
    """The same graph with only its model loaders replaced by tiny-model ones."""
    out = {}
    for node_id, node in api.items():
        swap = TINY_LOADERS.get(node["class_type"])
        if swap:
            class_type, inputs = swap(node["inputs"])
            node = {**node, "class_type": class_type, "inputs": inputs}
        out[node_id] = node
    return out


def tiny_api_graph(workflow: Path, object_info: dict[str, Any]) -> dict[str, Any]:
    return swap_to_tiny(ui_to_api(json.loads(workflow.read_text()), object_info))


def node_types(workflow: Path) -> set[str]:
    """The node types of a UI-format workflow file."""
    return {node["type"] for node in json.loads(workflow.read_text())["nodes"]}


def of_type(graph: dict[str, Any], class_type: str) -> str:
    """The id of the one node of ``class_type`` in an API graph."""
    (node_id,) = [k for k, n in graph.items() if n["class_type"] == class_type]
    return node_id


def is_video(graph: dict[str, Any]) -> bool:
    return any(n["class_type"] in VIDEO_LATENTS for n in graph.values())


def value(graph: dict[str, Any], reference: Any) -> Any:
    """An input's value, following a link to a primitive node (the workflows' width/height Int nodes)."""
    return graph[reference[0]]["inputs"]["value"] if isinstance(reference, list) else reference


def set_value(graph: dict[str, Any], inputs: dict[str, Any], name: str, new: Any) -> None:
    """Set an input, or the primitive node it is linked to."""
    if isinstance(inputs[name], list):
        graph[inputs[name][0]]["inputs"]["value"] = new
    else:
        inputs[name] = new


def at_cpu_size(graph: dict[str, Any], size: int = 64, frames: int = 9, steps: int = 2) -> dict[str, Any]:
    """A shipped workflow at a CPU size: a ``size``-px latent (``frames`` long for a video) and ``steps`` sampling steps;
    everything else as shipped (the shipped sizes and schedules are tested on their own)."""
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] in LATENTS:
            for name in ("width", "height"):
                set_value(graph, inputs, name, size)
            if "length" in inputs:
                inputs["length"] = frames
        if "steps" in inputs:  # KSampler and the custom samplers' schedulers
            inputs["steps"] = steps
    return graph
