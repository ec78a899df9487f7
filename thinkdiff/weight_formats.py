"""How the VLM's weights are stored, to fit consumer GPUs.

- ``default``: as loaded (bf16 / fp16 / fp32, the loader's dtype).
- ``fp8_e4m3fn``: the language model's Linear weights (and ``lm_head`` when it is not tied to the embeddings) stored
  as float8 e4m3fn, each layer computed in the working precision (``CastLinear``). Plain torch: any GPU, the CPU, no
  extra dependency. Embeddings and the vision tower stay in the working precision (the vision tower is small).
- ``bnb_8bit`` / ``bnb_nf4``: bitsandbytes' LLM.int8 and 4-bit NormalFloat of every Linear but ``lm_head`` (the vision
  tower's too, so that Qwen2-VL-7B fits in about 6.2 GB with NF4), through transformers' quantization config (optional
  dependency).

Sizes of Qwen2-VL-7B (8.29 B parameters), computed from its shapes: bf16 16.6 GB, fp8 9.5 GB, 8-bit about 9.4 GB and NF4
about 6.2 GB (bitsandbytes adds its scales: 4 bytes per row for 8-bit, per 64 weights for NF4).

None of this imports ComfyUI: the nodes turn the layers into ComfyUI cast layers afterwards (nodes/comfy_models.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ThinkDiffError

WeightFormat = Literal["default", "fp8_e4m3fn", "bnb_8bit", "bnb_nf4"]
WEIGHT_FORMATS: tuple[WeightFormat, ...] = get_args(WeightFormat)
BITSANDBYTES_INSTALL = "python -m pip install bitsandbytes"
VISION_PREFIX = "visual"  # Qwen2-VL's vision tower: model.visual (transformers 4.x) or model.model.visual (5.x)


class CastLinear(nn.Linear):
    """A Linear whose weight is stored in a narrow dtype (fp8) and cast, per forward, to the input's dtype and device."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        return F.linear(x, self.weight.to(x.device, x.dtype), bias)


def replace_modules(model: nn.Module, convert: Callable[[str, nn.Module], nn.Module | None]) -> int:
    """Replace every submodule for which ``convert(qualified name, module)`` returns a new module; returns the count."""
    replaced = 0
    for name, module in list(model.named_modules()):
        new = convert(name, module)
        if new is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, new)
            replaced += 1
    return replaced


def _in_vision_tower(name: str) -> bool:
    return VISION_PREFIX in name.split(".")


def store_linears_fp8(model: nn.Module) -> int:
    """Store the language model's Linear weights as float8 e4m3fn (computed in the input's precision); returns the count.

    Skipped: the vision tower, and ``lm_head`` when its weight is the embedding table (tied, as in Qwen2-VL-2B).
    """
    embeddings = model.get_input_embeddings().weight

    def convert(name: str, module: nn.Module) -> nn.Module | None:
        if type(module) is not nn.Linear or _in_vision_tower(name) or module.weight is embeddings:
            return None
        with torch.device("meta"):
            new = CastLinear(module.in_features, module.out_features, bias=module.bias is not None)
        new.weight = nn.Parameter(module.weight.detach().to(torch.float8_e4m3fn), requires_grad=False)
        new.bias = module.bias
        return new

    return replace_modules(model, convert)


def bitsandbytes_config(weights: WeightFormat, compute_dtype: torch.dtype) -> Any:
    """transformers' BitsAndBytesConfig for ``bnb_8bit`` / ``bnb_nf4``; a clear error when bitsandbytes is absent."""
    try:
        import bitsandbytes  # noqa: F401  (only to say how to install it)
    except ImportError as e:
        raise ThinkDiffError(f"weights {weights} need the optional package bitsandbytes, which is not installed: run "
                             f"`{BITSANDBYTES_INSTALL}` with ComfyUI's Python and restart, or pick fp8_e4m3fn (no extra "
                             "package; about 9.5 GB for Qwen2-VL-7B).") from e
    from transformers import BitsAndBytesConfig

    if weights == "bnb_nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                                  llm_int8_skip_modules=["lm_head"])
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head"])


def bitsandbytes_unavailable(weights: WeightFormat, error: Exception) -> ThinkDiffError:
    """transformers refused to set up bitsandbytes here (4.x supports the CPU only with Intel's extension)."""
    import transformers

    return ThinkDiffError(f"weights {weights} cannot run on this machine with transformers {transformers.__version__}: "
                          f"{error} Pick fp8_e4m3fn (no extra package; it runs on any GPU and the CPU), or on a CPU upgrade "
                          "transformers (5.x runs bitsandbytes there).")


def check_weight_format(weights: str) -> WeightFormat:
    if weights not in WEIGHT_FORMATS:
        raise ThinkDiffError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, not {weights!r}")
    return weights  # type: ignore[return-value]


def is_bitsandbytes(weights: WeightFormat) -> bool:
    return weights.startswith("bnb_")
