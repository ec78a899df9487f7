"""A ComfyUI base directory with tiny random models, and the loader swap that points workflows at them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .comfy_server import prepare_base
from .flux_weights import FILES, write_all
from .paths import REPO
from .tiny_models import make_aligner, make_qwen2vl, make_vision
from .workflow_api import ui_to_api

TINY_VLM = "tiny-random-Qwen2-VL"
TINY_ALIGNER = "tiny-random-aligner.safetensors"
TINY_CLIP_ALIGNER = "tiny-random-clip-aligner.safetensors"
TINY_VISION = "tiny-random-blip2-vision.safetensors"
WORKFLOWS = REPO / "workflows"
TINY_LOADERS = {
    "UNETLoader": lambda inputs: ("TinyFluxUNETLoader", {"unet_name": Path(FILES["flux"]).name}),
    "DualCLIPLoader": lambda inputs: ("TinyFluxDualCLIPLoader", {"clip_name1": Path(FILES["clip_l"]).name,
                                                                  "clip_name2": Path(FILES["t5xxl"]).name}),
    "VAELoader": lambda inputs: ("VAELoader", {"vae_name": "taef1"}),
    "ThinkDiffVLMLoader": lambda inputs: ("ThinkDiffVLMLoader", {**inputs, "model": TINY_VLM}),
    "ThinkDiffAlignerLoader": lambda inputs: ("ThinkDiffAlignerLoader", {
        "aligner_name": TINY_CLIP_ALIGNER if "clip" in inputs["aligner_name"] else TINY_ALIGNER}),
    "ThinkDiffVisionLoader": lambda inputs: ("ThinkDiffVisionLoader", {**inputs, "vision_name": TINY_VISION}),
}


def make_tiny_base(base: Path) -> Path:
    """Base dir with the pack, the tiny-loader test pack, tiny random models and the workflows' input images."""
    prepare_base(base)
    models = base / "models"
    write_all(models)
    make_qwen2vl(models / "LLM" / TINY_VLM)
    make_aligner(models / "thinkdiff" / TINY_ALIGNER)
    make_aligner(models / "thinkdiff" / TINY_CLIP_ALIGNER, in_dim=32, variant="clip")
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
