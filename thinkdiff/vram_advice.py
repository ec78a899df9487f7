"""Which weight format of Qwen2-VL-7B suits a GPU, for the doctor, the VLM loader's refusal and the docs.

Sizes are the bytes each format of ``thinkdiff.weight_formats`` stores, computed from Qwen2-VL-7B's shapes
(``thinkdiff.qwen2_vl_sizes``; scales included). ComfyUI evicts the VLM before Flux loads, so the VLM alone must fit with its working memory
(``thinkdiff.think_memory``), or stream. Every figure is in GB of 10**9 bytes. Importing this module does not import
torch; only :func:`gpu_memory` does, when it is called.
"""

from __future__ import annotations

from .qwen2_vl_sizes import QWEN2_VL_7B
from .think_memory import typical_think_bytes

GB = 10**9
BY_FIDELITY = ("default", "fp8_e4m3fn", "bnb_8bit", "bnb_nf4")  # best first (measured: scripts/bench_weight_formats.py)
QWEN2_VL_7B_GB = {weights: round(QWEN2_VL_7B.weight_bytes(weights) / GB, 1) for weights in BY_FIDELITY}  # bf16, weights only


def gigabytes(size: float) -> str:
    return f"{size / GB:.1f} GB"


def working_gb(weights: str) -> float:
    """Working memory of a typical think (two 1-megapixel images, 128 tokens) in ``weights``, with the CUDA context."""
    return round(typical_think_bytes(QWEN2_VL_7B, casts_weights=weights == "fp8_e4m3fn") / GB, 1)


def recommend(free_gb: float) -> tuple[str, str]:
    """The most faithful format that fits ``free_gb`` of GPU memory, and why."""
    for weights in BY_FIDELITY:
        if QWEN2_VL_7B_GB[weights] + working_gb(weights) <= free_gb:
            return weights, (f"{QWEN2_VL_7B_GB[weights]} GB of weights + about {working_gb(weights)} GB working memory fit "
                             f"in {free_gb:.1f} GB")
    return "fp8_e4m3fn", (f"nothing fits in {free_gb:.1f} GB: fp8_e4m3fn streams the layers that do not fit from CPU RAM "
                          "(slower, but it runs)")


def gpu_memory() -> tuple[str, float, float] | None:
    """(name, free GB, total GB) of the first CUDA GPU this Python sees, or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    return torch.cuda.get_device_name(0), free / GB, total / GB


def advice() -> str:
    """A paragraph for the doctor: the GPU, its free memory, and the VLM weight format to pick."""
    gpu = gpu_memory()
    if gpu is None:
        sizes = ", ".join(f"{weights} {size} GB" for weights, size in QWEN2_VL_7B_GB.items())
        return f"GPU: none visible to this Python. Qwen2-VL-7B weights: {sizes}."
    name, free, total = gpu
    weights, why = recommend(free)
    return (f"GPU: {name}, {free:.1f} of {total:.1f} GB free. VLM Loader weights: {weights} ({why}). "
            "Close other GPU programs or press Unload Models for more room.")
