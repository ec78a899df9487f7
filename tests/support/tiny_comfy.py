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
TINY_LOADERS = {
    # The tiny CogVideoX has native keys: the stock UNETLoader loads it. Tiny Flux needs the test loader (24 heads are fixed).
    "UNETLoader": lambda inputs: (("UNETLoader", {**inputs, "unet_name": Path(FILES["cogvideox"]).name})
                                  if "cogvideox" in inputs["unet_name"] else
                                  ("TinyFluxUNETLoader", {"unet_name": Path(FILES["flux"]).name})),
    "DualCLIPLoader": lambda inputs: ("TinyFluxDualCLIPLoader", {"clip_name1": Path(FILES["clip_l"]).name,
                                                                  "clip_name2": Path(FILES["t5xxl"]).name}),
    "CLIPLoader": lambda inputs: _tiny_cogvideox_clip(inputs),
    "VAELoader": lambda inputs: (("TinyCogVideoXVAELoader", {"vae_name": Path(FILES["cogvideox_vae"]).name})
                                 if "cogvideox" in inputs["vae_name"] else ("VAELoader", {"vae_name": "taef1"})),
    "ThinkDiffVLMLoader": lambda inputs: ("ThinkDiffVLMLoader", {**inputs, "model": TINY_VLM}),
    "ThinkDiffAlignerLoader": lambda inputs: ("ThinkDiffAlignerLoader", {
        "aligner_name": TINY_CLIP_ALIGNER if "clip" in inputs["aligner_name"] else TINY_ALIGNER}),
    "ThinkDiffVisionLoader": lambda inputs: ("ThinkDiffVisionLoader", {**inputs, "vision_name": TINY_VISION}),
}


def _tiny_cogvideox_clip(inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if inputs["type"] != "cogvideox":
        raise ValueError(f"no tiny stand-in for CLIPLoader type {inputs['type']!r}")
    return "TinyCogVideoXCLIPLoader", {"clip_name": Path(FILES["t5xxl"]).name}


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


def of_type(graph: dict[str, Any], class_type: str) -> str:
    """The id of the one node of ``class_type`` in an API graph."""
    (node_id,) = [k for k, n in graph.items() if n["class_type"] == class_type]
    return node_id


def is_video(graph: dict[str, Any]) -> bool:
    return any(n["class_type"] == "EmptyHunyuanLatentVideo" for n in graph.values())


def shrink_video(graph: dict[str, Any], frames: int = 9, size: int = 64, steps: int = 2) -> dict[str, Any]:
    """The CogVideoX workflow at a CPU size: a short latent and few steps (everything else as shipped)."""
    graph[of_type(graph, "EmptyHunyuanLatentVideo")]["inputs"].update(width=size, height=size, length=frames)
    graph[of_type(graph, "BasicScheduler")]["inputs"]["steps"] = steps
    return graph
