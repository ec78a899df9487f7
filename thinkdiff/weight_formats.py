"""How the VLM's weights are stored, to fit consumer GPUs.

- ``default``: as loaded (bf16 / fp16 / fp32, the loader's dtype).
- ``fp8_e4m3fn``: the language model's Linear weights (and ``lm_head`` when it is not tied to the embeddings) stored
  as float8 e4m3fn, each layer computed in the working precision (``CastLinear``). Plain torch: any GPU, the CPU, no
  extra dependency. Embeddings and the vision tower stay in the working precision (the vision tower is small).
- ``bnb_8bit`` / ``bnb_nf4``: bitsandbytes' LLM.int8 and 4-bit NormalFloat of every Linear but ``lm_head`` (the vision
  tower's too, so that Qwen2-VL-7B fits an 8 GB card with NF4), through transformers' quantization config (optional
  dependency).

What each format stores for Qwen2-VL-7B (8.29 B parameters) is computed from its shapes in ``thinkdiff.qwen2_vl_sizes``
(scales included: 4 bytes per row for fp8 and 8-bit, per 64 weights for NF4).

None of this imports ComfyUI: the nodes turn the layers into ComfyUI cast layers afterwards (nodes/comfy_models.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ThinkDiffError
from .vram_advice import QWEN2_VL_7B_GB

WeightFormat = Literal["default", "fp8_e4m3fn", "bnb_8bit", "bnb_nf4"]
WEIGHT_FORMATS: tuple[WeightFormat, ...] = get_args(WeightFormat)
BITSANDBYTES_INSTALL = "python -m pip install bitsandbytes"
VISION_PREFIX = "visual"  # Qwen2-VL's vision tower: model.visual (transformers 4.x) or model.model.visual (5.x)


class CastLinear(nn.Linear):
    """A Linear whose weight is stored in float8 e4m3fn with a float32 scale (``weight ≈ stored × weight_scale``: per
    output channel, or one per tensor), dequantized per forward to the input's dtype and device."""

    weight_scale: nn.Parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        weight = self.weight.to(x.device, x.dtype) * self.weight_scale.to(x.device, x.dtype)
        return F.linear(x, weight, bias)


FP8_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
Fp8Scaling = Literal["channel", "tensor", "none"]


def fp8_with_scale(weight: torch.Tensor, scaling: Fp8Scaling = "channel") -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` as float8 e4m3fn and the float32 scale that maps its largest magnitude (per output row, or over the
    tensor) to e4m3fn's largest value, so that small weights stay out of its subnormals (below 2**-6, step 2**-9)."""
    weight = weight.detach().float()
    if scaling == "none":
        scale = torch.ones(1, 1, device=weight.device)
    else:
        amax = weight.abs().amax(dim=1, keepdim=True) if scaling == "channel" else weight.abs().amax().reshape(1, 1)
        scale = amax.clamp(min=torch.finfo(torch.float32).tiny) / FP8_MAX
    return (weight / scale).to(torch.float8_e4m3fn), scale


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


def store_linears_fp8(model: nn.Module, scaling: Fp8Scaling = "channel") -> int:
    """Store the language model's Linear weights as scaled float8 e4m3fn (computed in the input's precision); returns the
    count. Per-channel scales are the measured choice (scripts/bench_weight_formats.py compares them with one scale per
    tensor and with none).

    Skipped: the vision tower, and ``lm_head`` when its weight is the embedding table (tied, as in Qwen2-VL-2B).
    """
    embeddings = model.get_input_embeddings().weight

    def convert(name: str, module: nn.Module) -> nn.Module | None:
        if type(module) is not nn.Linear or _in_vision_tower(name) or module.weight is embeddings:
            return None
        with torch.device("meta"):
            new = CastLinear(module.in_features, module.out_features, bias=module.bias is not None)
        stored, scale = fp8_with_scale(module.weight, scaling)
        new.weight = nn.Parameter(stored, requires_grad=False)
        new.weight_scale = nn.Parameter(scale, requires_grad=False)
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
                             f"package; about {QWEN2_VL_7B_GB['fp8_e4m3fn']} GB for Qwen2-VL-7B).") from e
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


class QuantizedStateMoves:
    """Mixed into bitsandbytes' Linear8bitLt / Linear4bit: every move of the module, its own ``.to()`` or a parent's
    (``_apply``, which ComfyUI's whole-model moves use), takes the quantized weight with all its state.

    torch moves a parameter by swapping its data, which leaves the tensors bitsandbytes hangs on the parameter (``CB``,
    ``SCB``, ``quant_state``) and on the module (``state.CB`` / ``state.SCB`` after the first forward) where they were:
    an unloaded 8-bit model kept its int8 weights on the GPU. Here the weight is replaced by bitsandbytes' own moved copy
    (``Int8Params.to`` / ``Params4bit.to`` move or quantize its state), and the module's state follows it.
    """

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        module: Any = self
        old = module.weight
        module.weight = fn(old)
        device = module.weight.device
        for name, value in vars(old).items():  # what bitsandbytes' own to() did not carry (SCB in a move within meta)
            if isinstance(value, torch.Tensor) and getattr(module.weight, name, None) is None:
                setattr(module.weight, name, value.to(device))
        if module.bias is not None:
            module.bias = nn.Parameter(fn(module.bias), requires_grad=False)
        state = getattr(module, "state", None)  # Linear8bitLt's MatmulLtState: CB, SCB, outlier indices...
        for name, value in (vars(state) if state is not None else {}).items():
            if isinstance(value, torch.Tensor):
                setattr(state, name, value.to(device))
        if state is not None and state.CB is not None:  # after the first forward the int8 values live in the state
            state.CB = module.weight.data  # one copy, as bitsandbytes' forward leaves it
            module.weight.CB = module.weight.SCB = None
        return self


_MOVING_CLASSES: dict[type, type] = {}


def keep_quantized_state_with_weights(model: nn.Module) -> None:
    """Give every bitsandbytes layer of ``model`` :class:`QuantizedStateMoves`."""
    for module in model.modules():
        cls = type(module)
        if cls.__module__.startswith("bitsandbytes") and hasattr(module, "weight"):
            if cls not in _MOVING_CLASSES:
                _MOVING_CLASSES[cls] = type(cls.__name__, (QuantizedStateMoves, cls), {})  # of this module
            module.__class__ = _MOVING_CLASSES[cls]


def _quantized_nf4_bytes(weight: Any) -> int:
    """Bytes a not yet quantized ``Params4bit`` will take once bitsandbytes quantizes it (on its first move to a GPU, in
    bitsandbytes versions that quantize only there): packed 4-bit values, one float32 absmax per block and the code."""
    blocks = -(-weight.numel() // weight.blocksize)
    absmax = blocks + -(-blocks // 256) * 4 + 256 * 4 + 4 if weight.compress_statistics else blocks * 4
    return -(-weight.numel() // 2) + absmax + 16 * 4


def stored_bytes(model: nn.Module) -> int:
    """Bytes of what ``model`` holds once on its device: each storage once (a tied embedding; bitsandbytes' int8 state
    shares the weight's), bitsandbytes' scales and 4-bit state included, a 4-bit weight at its quantized size."""
    storages: dict[int, int] = {}
    extra = 0
    for module in model.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        for tensor in list(tensors):
            if getattr(tensor, "bnb_quantized", True) is False:
                extra += _quantized_nf4_bytes(tensor)
                tensors.remove(tensor)
            tensors += [t for t in (getattr(tensor, "CB", None), getattr(tensor, "SCB", None)) if t is not None]
            quant_state = getattr(tensor, "quant_state", None)
            if quant_state is not None:
                tensors += [quant_state.absmax, quant_state.code]
                if quant_state.nested:
                    tensors += [quant_state.offset, quant_state.state2.absmax, quant_state.state2.code]
        state = getattr(module, "state", None)
        tensors += [t for t in (getattr(state, "CB", None), getattr(state, "SCB", None)) if t is not None]
        for tensor in tensors:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(storages.values()) + extra
