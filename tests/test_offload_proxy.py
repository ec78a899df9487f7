"""Where the VLM's tensors really are after ComfyUI loads, partially loads and unloads it, on a CPU.

On a CPU ComfyUI's load and offload devices are the same, so no weight ever moves and a tensor left behind goes unseen.
Here one of the two is ``meta``: a tensor on the wrong device shows. ComfyUI's own ``ModelPatcher`` code does the moves
(``patch_model`` with a budget, ``partially_unload``, ``detach``: what ``load_models_gpu`` and eviction call), for every
weight format, on both ComfyUI versions. The invariant, for every tensor reachable from the model (parameters, buffers,
bitsandbytes' ``CB`` / ``SCB`` / ``quant_state``, fp8 scales), found by walking the objects (not by the pack's code):

- after a load, a tensor off the load device belongs to a module ComfyUI streams (``comfy_cast_weights`` on), which casts
  it per forward; any other one would crash the forward with a device mismatch;
- the bytes on the load device are what ComfyUI's bookkeeping (``loaded_size``) says, at most (plus the rotary tables,
  a few bytes ComfyUI does not list, which the pack moves at every load); after a full unload, none.

Moves to and from ``meta`` cannot keep a parameter object as torch does between CPU and CUDA (it swaps the data); torch's
``swap_module_params_on_conversion`` keeps it, so a tied embedding stays one tensor, as on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import transformers
from torch import nn

from tests.support.comfy_pack import pack
from tests.support.tiny_models import BITSANDBYTES_ON_CPU
from thinkdiff.weight_formats import WEIGHT_FORMATS
from thinkdiff.weight_formats import stored_bytes as accounted_bytes

pytestmark = pytest.mark.comfyui
META, CPU = torch.device("meta"), torch.device("cpu")
STREAMABLE = ("default", "fp8_e4m3fn")
BUDGETS = (0.6, 0.25, 0.02)  # of the model's size; 0.02 leaves nearly everything streamed


@pytest.fixture(autouse=True)
def params_keep_their_identity():
    torch.__future__.set_swap_module_params_on_conversion(True)
    yield
    torch.__future__.set_swap_module_params_on_conversion(False)


def _tensors_in(value: object, depth: int = 0) -> Iterator[torch.Tensor]:
    """Tensors held by ``value``: itself, in containers, or in bitsandbytes' state objects (MatmulLtState, QuantState)."""
    if isinstance(value, torch.Tensor):
        yield value
        yield from _tensors_in(vars(value), depth + 1)  # Int8Params.CB / SCB, Params4bit.quant_state
    elif depth > 4:
        return
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item, depth + 1)
    elif type(value).__module__.startswith("bitsandbytes"):
        yield from _tensors_in(vars(value), depth + 1)


def reachable(model: nn.Module) -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """(module name, module, tensor) for every tensor each module holds directly, each tensor once."""
    seen: set[int] = set()
    for name, module in model.named_modules():
        # rope_deltas: Qwen2-VL's 8-byte position offset of the last prompt, recomputed by every prefill
        own = {k: v for k, v in vars(module).items() if k not in ("_modules", "processor", "rope_deltas")}
        for tensor in _tensors_in(own):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                yield name, module, tensor


def stored_bytes(model: nn.Module, device: torch.device | None = None) -> int:
    """Bytes of distinct storages (a tied weight once; bitsandbytes' CB shares the weight's storage), optionally on one device."""
    storages = {}
    for _, _, tensor in reachable(model):
        if device is None or tensor.device == device:
            storage = tensor.untyped_storage()
            storages[storage._cdata] = storage.nbytes()  # the storage itself, also on meta (where data_ptr is 0)
    return sum(storages.values())


def misplaced(model: nn.Module, load_device: torch.device) -> list[str]:
    """Tensors off ``load_device`` that no ComfyUI-streamed module casts per forward."""
    return sorted({f"{name} ({type(module).__name__})" for name, module, tensor in reachable(model)
                   if tensor.device != load_device and not getattr(module, "comfy_cast_weights", False)})


def unlisted_bytes(model: nn.Module) -> int:
    """The rotary tables: buffers of modules without parameters, which ComfyUI's load list leaves out."""
    return sum(b.numel() * b.element_size() for m in model.modules() if next(m.parameters(recurse=False), None) is None
               for b in m.buffers(recurse=False))


def vlm(folder, weights: str, load_device: torch.device):
    """The loader node's ModelPatcher (fp32 tiny Qwen2-VL), made for the CPU, then given ``load_device``."""
    patcher = pack().vlm_nodes.vlm_patcher(folder, CPU, torch.float32, weights)
    patcher.load_device = load_device
    return patcher


@pytest.fixture(scope="module", params=WEIGHT_FORMATS)
def weights(request, tiny_vlm_folder):
    if request.param.startswith("bnb_"):
        pytest.importorskip("bitsandbytes")
        if not BITSANDBYTES_ON_CPU:  # its refusal is tested in tests/test_comfyui.py
            pytest.skip(f"transformers {transformers.__version__} runs bitsandbytes only on GPUs")
    return request.param


def budgets(weights: str) -> tuple[float, ...]:
    """Fractions of the model ComfyUI may load (0 = all): bitsandbytes models are always loaded whole."""
    return (0.0, *BUDGETS) if weights in STREAMABLE else (0.0,)


@pytest.mark.parametrize("tied", [False, True])
def test_the_size_comfyui_accounts_is_the_bytes_stored(tiny_vlm_folder, tied_vlm_folder, weights, tied):
    """The 7B's untied head counts apart; the 2B's tied one (the embedding table) once."""
    patcher = vlm(tied_vlm_folder if tied else tiny_vlm_folder, weights, META)
    assert patcher.model_size() == stored_bytes(patcher.model)


@pytest.mark.parametrize("share", (0.0, *BUDGETS))
def test_after_a_load_every_tensor_is_on_the_gpu_or_streamed(tiny_vlm_folder, weights, share):
    if share not in budgets(weights):
        pytest.skip("bitsandbytes models are loaded whole")
    patcher = vlm(tiny_vlm_folder, weights, META)  # offload device: the CPU
    patcher.patch_model(META, lowvram_model_memory=int(share * patcher.model_size()))
    assert misplaced(patcher.model, META) == []
    resident = stored_bytes(patcher.model, META)
    assert resident <= patcher.loaded_size() + unlisted_bytes(patcher.model), (resident, patcher.loaded_size())
    if share == 0.0:
        assert resident == patcher.loaded_size() == patcher.model_size()
    assert patcher.model.param_device == META  # where the library puts its inputs (not a streamed layer's device)


def test_after_an_unload_nothing_is_left_on_the_gpu(tiny_vlm_folder, weights):
    """Loaded on the CPU (standing for the GPU), one think (bitsandbytes sets up its int8 state in the first forward),
    then ComfyUI frees half the model, then all of it (offload device: meta)."""
    patcher = vlm(tiny_vlm_folder, weights, CPU)
    patcher.offload_device = META
    patcher.patch_model(CPU, lowvram_model_memory=0)
    encoder = patcher.model
    modules = pack()
    encoder.encode([modules.vlm.VLMRequest("a red car")], modules.sampling_options.SamplingOptions(max_new_tokens=2, greedy=True))
    assert accounted_bytes(encoder) == stored_bytes(encoder)  # also once bitsandbytes' int8 state sits on the modules
    freed = patcher.partially_unload(META, memory_to_free=patcher.model_size() // 2)
    assert freed > 0
    resident = stored_bytes(encoder, CPU)
    assert resident <= max(patcher.loaded_size(), 0) + unlisted_bytes(encoder), (resident, patcher.loaded_size())
    patcher.detach()
    left = sorted({name for name, _, tensor in reachable(encoder) if tensor.device != META})
    assert left == [] and patcher.loaded_size() == 0
    ran = 0
    for module in encoder.modules():  # bitsandbytes' int8 values and scales moved with their layer, not dropped
        state = getattr(module, "state", None)
        if type(state).__name__ == "MatmulLtState":
            holder = module.weight if module.weight.CB is not None else state  # the state, once the layer has run
            ran += holder is state
            assert (holder.CB.dtype, holder.CB.shape, holder.CB.device) == (torch.int8, module.weight.shape, META)
            assert (holder.SCB.shape, holder.SCB.device) == (module.weight.shape[:1], META)
    assert ran > 0 or weights != "bnb_8bit"  # the language model's layers ran (the vision tower's did not)
