"""Letting ComfyUI stream the VLM: its layers become ComfyUI cast layers, which the memory manager can leave in CPU RAM.

ComfyUI's partial loading (lowvram, and 0.33's estimate-based loading) moves weights to the GPU per layer only for
``comfy.ops`` modules (those with ``comfy_cast_weights``); any other module is moved whole or not at all. A loaded
Hugging Face model is made of plain torch layers, so each one is given the matching ``comfy.ops.manual_cast`` class:
a subclass of the same torch class with no extra state, whose forward casts the weight to the input's device and dtype
(what ``thinkdiff.weight_formats.CastLinear`` does for fp8 weights). Parameters are untouched, so fp8 weights stay fp8.
bitsandbytes layers are left alone (they cannot be streamed; such a model is loaded whole).
"""

from __future__ import annotations

import comfy.ops
from torch import nn

from ..thinkdiff.weight_formats import CastLinear

OPS = comfy.ops.manual_cast
CAST_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: OPS.Linear, CastLinear: OPS.Linear, nn.Embedding: OPS.Embedding, nn.Conv3d: OPS.Conv3d,
    nn.LayerNorm: OPS.LayerNorm,
}


def make_streamable(model: nn.Module) -> int:
    """Give every plain Linear / Embedding / Conv3d / LayerNorm of ``model`` its ComfyUI cast class; returns the count."""
    count = 0
    for module in model.modules():
        cast = CAST_CLASSES.get(type(module))
        if cast is not None:
            module.__class__ = cast  # a subclass of the module's own class: same parameters, ComfyUI's forward
            if not hasattr(module, "bias"):  # ComfyUI's cast code reads a bias; torch's Embedding has none
                module.bias = None
            count += 1
    return count
