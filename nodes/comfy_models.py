"""Model folders and ComfyUI memory management for ThinkDiff models."""

from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.latest import io

from ..thinkdiff.dtypes import DTYPES
from ..thinkdiff.errors import ThinkDiffError
from ..thinkdiff.model_setup import missing_message
from ..thinkdiff.safetensors_header import read_header
from ..thinkdiff.vision import VISION_FORMAT
from ..thinkdiff.vram_advice import QWEN2_VL_7B_GB, gigabytes
from ..thinkdiff.weight_formats import is_bitsandbytes, stored_bytes

ALIGNER_FOLDER = "thinkdiff"
VLM_FOLDER = "LLM"
ALIGNER_EXTENSIONS = {".safetensors", ".sft", ".pth", ".pt"}
MAX_VLM_FOLDER_DEPTH = 2


def register_model_folders() -> None:
    """``models/thinkdiff`` for aligner files; ``models/LLM`` for Hugging Face VLM folders."""
    for name, extensions in ((ALIGNER_FOLDER, ALIGNER_EXTENSIONS), (VLM_FOLDER, set())):
        default = str(Path(folder_paths.models_dir) / name)
        if name in folder_paths.folder_names_and_paths:  # already set up by extra_model_paths.yaml or another pack
            paths, known = folder_paths.folder_names_and_paths[name]
            if default not in paths:
                paths.append(default)
            known.update(extensions)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


# Files that mark a Hugging Face model folder: listed even when config.json is missing (a half-copied download), so the
# loader can say what is missing instead of the folder silently not appearing.
MODEL_FOLDER_MARKERS = ("config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json")


def vlm_folders() -> list[str]:
    """Model folders under every ``models/LLM`` root, up to two levels deep (complete or not: see MODEL_FOLDER_MARKERS)."""
    found: set[str] = set()
    for root in map(Path, folder_paths.get_folder_paths(VLM_FOLDER)):
        if not root.is_dir():
            continue
        for marker in MODEL_FOLDER_MARKERS:
            for path in root.glob(f"**/{marker}"):
                relative = path.parent.relative_to(root)
                if 0 < len(relative.parts) <= MAX_VLM_FOLDER_DEPTH:
                    found.add(relative.as_posix())
    return sorted(found)


def vlm_folder_path(name: str) -> Path:
    for root in map(Path, folder_paths.get_folder_paths(VLM_FOLDER)):
        if (root / name).is_dir():
            return root / name  # the VLM loader explains what an incomplete folder lacks
    raise ThinkDiffError(missing_message(name, VLM_FOLDER, folder_paths.get_folder_paths(VLM_FOLDER)))


def _is_vision_file(path: str) -> bool | None:
    """Whether a models/thinkdiff file is a vision-encoder file (its ``format`` metadata); None when it cannot be read."""
    if not path.endswith((".safetensors", ".sft")):
        return False
    try:
        return read_header(Path(path)).get("__metadata__", {}).get("format") == VISION_FORMAT
    except (ThinkDiffError, OSError):
        return None


def thinkdiff_files(vision: bool) -> list[str]:
    """Files in models/thinkdiff: vision-encoder files, or everything else (aligners). An unreadable file is listed in
    both lists, so that it shows where the user expects it and its loader can say that it is damaged."""
    names = folder_paths.get_filename_list(ALIGNER_FOLDER)
    return [n for n in names if _is_vision_file(folder_paths.get_full_path(ALIGNER_FOLDER, n)) in (vision, None)]


def thinkdiff_file_path(name: str) -> Path:
    path = folder_paths.get_full_path(ALIGNER_FOLDER, name)
    if path is None:
        raise ThinkDiffError(missing_message(name, ALIGNER_FOLDER, folder_paths.get_folder_paths(ALIGNER_FOLDER)))
    return Path(path)


def placement_inputs(what: str) -> list[io.Input]:
    """The dtype and device choices of a loader node."""
    return [
        io.Combo.Input("dtype", options=["auto", "bf16", "fp16", "fp32"], default="auto",
                       tooltip=f"Precision of the {what}. auto = bf16 where the device supports it (the paper's choice), "
                               "else fp16, else fp32."),
        io.Combo.Input("device", options=["default", "cpu"], default="default",
                       tooltip=f"default = ComfyUI's main device (GPU); cpu keeps the {what} off the GPU (slow)."),
    ]


def placement(dtype: str, device: str) -> tuple[torch.device, torch.dtype]:
    """The load device and dtype for a loader's ``dtype`` and ``device`` choices."""
    target = load_device(device)
    return target, resolve_dtype(dtype, target)


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` picks bf16 where ComfyUI says the device runs it well, else fp16, else fp32."""
    if choice in DTYPES:
        return DTYPES[choice]
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if mm.should_use_fp16(device) else torch.float32


def load_device(choice: str) -> torch.device:
    return torch.device("cpu") if choice == "cpu" else mm.get_torch_device()


def patcher_for(module: torch.nn.Module, device: torch.device) -> comfy.model_patcher.ModelPatcher:
    """Hand ``module`` (kept on the offload device) to ComfyUI's memory manager, sized by the bytes it stores."""
    offload = mm.text_encoder_offload_device() if device.type != "cpu" else device
    return comfy.model_patcher.ModelPatcher(module, load_device=device, offload_device=offload, size=stored_bytes(module))


def obtainable_memory(device: torch.device) -> int:
    """Bytes a model on ``device`` can have: what is free, and what ComfyUI would free by evicting its models there."""
    loaded = [m.model for m in mm.current_loaded_models if m.device == device and m.model is not None]
    return int(mm.get_free_memory(device)) + sum(int(patcher.loaded_size()) for patcher in loaded)


def check_fits(patcher: comfy.model_patcher.ModelPatcher, weights: str, working_bytes: int) -> None:
    """A bitsandbytes model cannot be streamed: refuse one that, with ``working_bytes`` for thinking, does not fit in what
    the GPU has, naming the formats that fit."""
    device = patcher.load_device
    if not is_bitsandbytes(weights) or device.type == "cpu":
        return
    size, available = patcher.model_size(), obtainable_memory(device)
    if size + working_bytes > available:
        raise ThinkDiffError(f"the VLM in {weights} needs {gigabytes(size)} of weights and about {gigabytes(working_bytes)} "
                             f"to think, but {device} has {gigabytes(available)} free (counting models ComfyUI can unload). "
                             "Choose fp8_e4m3fn or default: those stream the layers that do not fit from CPU RAM; or bnb_nf4 "
                             f"if this was bnb_8bit (Qwen2-VL-7B: about {QWEN2_VL_7B_GB['bnb_nf4']} GB).")


def load_for_use(patcher: comfy.model_patcher.ModelPatcher, streamable: bool = False,
                 memory_required: int = 0) -> torch.nn.Module:
    """Move the model onto its device through ComfyUI (evicting others as needed, and keeping ``memory_required`` bytes
    free for what the forward needs beside the weights) and return it. A ``streamable`` model (ComfyUI cast layers) may
    be loaded partially when it does not fit: the rest is streamed from CPU RAM per layer."""
    mm.load_models_gpu([patcher], memory_required=memory_required, force_full_load=not streamable)
    return patcher.model
