"""Letting ComfyUI stream the VLM: every layer that holds weights becomes a ComfyUI cast layer, which the memory manager
can leave in CPU RAM.

ComfyUI's partial loading (lowvram, and 0.33's estimate-based loading) moves weights to the GPU per layer only for
modules with ``comfy_cast_weights``; any other module holding parameters is moved only if it still fits, and otherwise
stays in CPU RAM, neither loaded nor streamed (a device-mismatch crash that depends on the free memory). So:

- plain Linear / Embedding / Conv3d / LayerNorm get the matching ``comfy.ops.manual_cast`` class (a subclass of the same
  torch class with no extra state, whose forward casts the weight to the input's device and dtype);
- every other module with parameters of its own (Qwen2's RMSNorm, the scaled-fp8 ``CastLinear``) gets
  :class:`StreamedModule`, which ComfyUI treats the same way: when it streams the module, the forward runs on copies
  of the module's parameters and buffers on the input's device;
- modules that hold only buffers (the rotary tables, a few KB) are absent from ComfyUI's load list, so partial loading
  never moves them: :func:`load_buffers_whole` moves them at every load (the only modules loaded whole).

Parameters are untouched, so fp8 weights stay fp8. bitsandbytes layers are left alone: they cannot be streamed, and
such a model is loaded whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import comfy.ops
import torch
from comfy.patcher_extension import CallbacksMP
from torch import nn

OPS = comfy.ops.manual_cast
CAST_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: OPS.Linear, nn.Embedding: OPS.Embedding, nn.Conv3d: OPS.Conv3d, nn.LayerNorm: OPS.LayerNorm,
}


class StreamedModule(comfy.ops.CastWeightBiasOp):
    """Mixed in before a module's own class: ComfyUI may leave its parameters in CPU RAM (``comfy_cast_weights``), and
    then each forward computes with copies on the input's device."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.comfy_cast_weights:
            return super().forward(*args, **kwargs)
        device = next(a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        with _tensors_on(self, device):
            return super().forward(*args, **kwargs)


@contextlib.contextmanager
def _tensors_on(module: nn.Module, device: torch.device) -> Iterator[None]:
    saved = {**module._parameters}, {**module._buffers}
    for tensors in (module._parameters, module._buffers):
        for name, tensor in tensors.items():
            if tensor is not None:
                tensors[name] = tensor.to(device, non_blocking=True)
    try:
        yield
    finally:
        module._parameters.update(saved[0])
        module._buffers.update(saved[1])


_STREAMED_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def _streamed_class(cls: type[nn.Module]) -> type[nn.Module]:
    if cls not in _STREAMED_CLASSES:
        _STREAMED_CLASSES[cls] = type(f"Streamed{cls.__name__}", (StreamedModule, cls), {"__module__": __name__})
    return _STREAMED_CLASSES[cls]


def _holds_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def make_streamable(model: nn.Module) -> int:
    """Give every module of ``model`` that holds parameters a ComfyUI cast class; returns the count."""
    count = 0
    for module in model.modules():
        if not _holds_parameters(module) or hasattr(module, "comfy_cast_weights"):
            continue
        module.__class__ = CAST_CLASSES.get(type(module)) or _streamed_class(type(module))
        if not hasattr(module, "bias"):  # ComfyUI's cast code reads a bias; torch's Embedding has none
            module.bias = None
        count += 1
    return count


def buffer_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that hold buffers but no parameters: loaded whole at every load."""
    return [m for m in model.modules() if not _holds_parameters(m) and next(m.buffers(recurse=False), None) is not None]


def load_buffers_whole(patcher: Any) -> None:
    """Have ComfyUI's every load of ``patcher`` also move its parameter-less modules' buffers to the load device."""
    modules = buffer_modules(patcher.model)

    def move(_patcher: Any, device_to: torch.device | None, *_: Any) -> None:
        if device_to is not None:
            for module in modules:
                module.to(device_to)

    patcher.add_callback(CallbacksMP.ON_LOAD, move)
