"""``nodes.streaming`` on small hand-made modules: which modules get which ComfyUI cast class, what a streamed module's
forward computes with and where, and the buffers moved at every load. ``meta`` stands for the GPU (a tensor on the wrong
device fails or shows); tests/test_offload_proxy.py checks the whole VLM under ComfyUI's own loading code."""

from __future__ import annotations

import importlib
import types

import pytest
import torch
from torch import nn

from tests.support.comfy_pack import pack

pytestmark = pytest.mark.comfyui
META, CPU = torch.device("meta"), torch.device("cpu")
pack()  # ComfyUI importable
OPS = importlib.import_module("comfy.ops").manual_cast
ON_LOAD = importlib.import_module("comfy.patcher_extension").CallbacksMP.ON_LOAD


def streaming() -> types.ModuleType:
    return pack().streaming


class Scaled(nn.Module):
    """A module with a parameter and a buffer of its own (as Qwen2's RMSNorm); records the tensors its forward used."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
        self.register_buffer("offset", torch.tensor([0.5, -0.5, 0.25]))
        self.used: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, scale: float, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        self.used.append((self.weight, self.offset))
        out = x * self.weight * scale + self.offset
        return out if shift is None else out + shift


class Rotary(nn.Module):
    """Buffers only (as the rotary tables)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("inv_freq", torch.arange(4.0))


class MyLinear(nn.Linear):
    """A subclass of a torch layer: not the plain layer the ComfyUI class replaces."""


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 2)
        self.embedding = nn.Embedding(5, 3)
        self.conv = nn.Conv3d(1, 1, 1)
        self.norm = nn.LayerNorm(3)
        self.bare_norm = nn.LayerNorm(3, elementwise_affine=False)
        self.blocks = nn.ModuleList([nn.ModuleDict({"scaled": Scaled(), "rotary": Rotary()}), MyLinear(2, 2)])
        self.rotary = Rotary()
        self.cast = OPS.Linear(2, 2)  # already a ComfyUI cast layer


def streamed_scaled() -> Scaled:
    module = Scaled()
    assert streaming().make_streamable(module) == 1
    return module


def test_each_module_holding_parameters_gets_its_comfyui_cast_class():
    model = Model()
    linear_bias = model.linear.bias
    assert streaming().make_streamable(model) == 6
    kinds = {name: type(module) for name, module in model.named_modules()}
    scaled, my_linear = kinds["blocks.0.scaled"], kinds["blocks.1"]
    assert kinds == {"": Model, "linear": OPS.Linear, "embedding": OPS.Embedding, "conv": OPS.Conv3d, "norm": OPS.LayerNorm,
                     "bare_norm": nn.LayerNorm, "blocks": nn.ModuleList, "blocks.0": nn.ModuleDict,
                     "blocks.0.scaled": scaled, "blocks.0.rotary": Rotary, "blocks.1": my_linear, "rotary": Rotary,
                     "cast": OPS.Linear}
    assert scaled.__bases__ == (streaming().StreamedModule, Scaled) and scaled.__name__ == "StreamedScaled"
    assert my_linear.__bases__ == (streaming().StreamedModule, MyLinear) and my_linear.__name__ == "StreamedMyLinear"
    assert model.embedding.bias is None  # ComfyUI's cast code reads a bias; torch's Embedding has none
    assert model.blocks[0]["scaled"].bias is None
    assert model.linear.bias is linear_bias  # a real bias is kept
    assert streaming().make_streamable(model) == 0  # every module is a cast class now


def test_cast_classes_compute_what_the_torch_layers_did():
    model, x, ids = Model(), torch.randn(4, 3), torch.tensor([[0, 4, 2]])
    before = (model.linear(x), model.embedding(ids), model.norm(x), model.blocks[0]["scaled"](2.0, x))
    streaming().make_streamable(model)
    after = (model.linear(x), model.embedding(ids), model.norm(x), model.blocks[0]["scaled"](2.0, x))
    for old, new in zip(before, after, strict=True):
        torch.testing.assert_close(new, old, rtol=0, atol=0)


def test_a_streamed_class_is_made_once_per_class_and_adds_nothing_but_the_mixin():
    class Fresh(nn.Module):
        pass

    made = streaming()._streamed_class(Fresh)
    assert made is streaming()._streamed_class(Fresh)
    assert (made.__name__, made.__module__, made.__bases__) == ("StreamedFresh", streaming().__name__,
                                                                (streaming().StreamedModule, Fresh))
    assert set(vars(made)) == {"__module__", "__doc__"}


def test_a_streamed_module_left_in_place_computes_with_its_own_tensors():
    module = streamed_scaled()
    weight, offset = module.weight, module.offset
    x, shift = torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 1.0, 0.0])
    out = module(2.0, x, shift=shift)
    torch.testing.assert_close(out, torch.tensor([2.5, 4.5, 12.25]), rtol=0, atol=0)  # x * w * 2 + offset + shift
    assert module.used == [(weight, offset)]  # the module's own objects, not copies
    with pytest.raises(RuntimeError, match="device"):  # not streamed: nothing moves to the input's device
        module(2.0, torch.ones(3, device=META))
    assert module.used[-1] == (weight, offset)


def test_a_streamed_module_computes_on_copies_on_the_inputs_device_and_keeps_its_tensors():
    module = streamed_scaled()
    module.comfy_cast_weights = True  # ComfyUI left its weights in CPU RAM and streams them
    weight, offset = module.weight, module.offset
    out = module(2.0, torch.ones(3, device=META), shift=torch.ones(3, device=META))
    assert (out.device, out.shape) == (META, (3,))
    (used_weight, used_offset), = module.used
    assert (used_weight.device, used_offset.device) == (META, META)
    assert module.weight is weight and module.offset is offset and weight.device == offset.device == CPU
    assert dict(module.named_parameters()) == {"weight": weight}  # restored, nothing added
    module(2.0, x=torch.ones(3, device=META))  # the input's device from a keyword argument
    assert module.used[-1][0].device == META and module.weight is weight
    torch.testing.assert_close(module(2.0, torch.tensor([1.0, 1.0, 2.0])), torch.tensor([2.5, 3.5, 12.25]), rtol=0, atol=0)


def test_buffer_modules_are_the_modules_with_buffers_and_no_parameters():
    model = Model()
    assert streaming().buffer_modules(model) == [model.blocks[0]["rotary"], model.rotary]


def test_every_load_moves_the_buffer_modules_to_the_load_device():
    model = Model()
    callbacks = []
    patcher = types.SimpleNamespace(model=model, add_callback=lambda kind, callback: callbacks.append((kind, callback)))
    streaming().load_buffers_whole(patcher)
    ((kind, move),) = callbacks
    assert kind == ON_LOAD
    move(patcher, None, False, 0)  # a load that names no device moves nothing
    assert model.rotary.inv_freq.device == CPU
    move(patcher, META, False, 0)  # ComfyUI's callback arguments: patcher, device_to, lowvram budget, ...
    assert model.rotary.inv_freq.device == model.blocks[0]["rotary"].inv_freq.device == META
    assert model.blocks[0]["scaled"].offset.device == model.linear.weight.device == CPU  # ComfyUI moves those itself
