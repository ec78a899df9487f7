"""What the VLM reserves and accounts in ComfyUI's memory manager: the think's working memory is handed to
``load_models_gpu``, its KV-cache term is the cache transformers really builds, and ComfyUI 0.33's load list counts
each fp8 layer's copy in the working precision (the loader names that precision as ``manual_cast_dtype``)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.support.comfy_pack import pack
from tests.support.paths import COMFYUI_VERSION
from thinkdiff.qwen2_vl_sizes import QWEN2_VL_7B, Shapes
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.think_memory import (
    CUDA_CONTEXT_BYTES,
    TYPICAL_NEW_TOKENS,
    TYPICAL_PATCHES,
    TYPICAL_PROMPT_TOKENS,
    kv_cache_bytes,
    think_bytes,
    typical_think_bytes,
)
from thinkdiff.vlm import VLMRequest

pytestmark = pytest.mark.comfyui
CPU = torch.device("cpu")


def cache_bytes(cache) -> int:
    """Bytes of a transformers DynamicCache (5.x: ``layers``; 4.x: ``key_cache`` / ``value_cache``)."""
    if hasattr(cache, "layers"):
        tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
    else:
        tensors = [*cache.key_cache, *cache.value_cache]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("batch", [1, 2])
def test_the_kv_cache_term_is_the_cache_transformers_builds(encoder, batch):
    request = VLMRequest("<image> what is this?", [Image.new("RGB", (84, 56), "red")])
    inputs = encoder.prepare([request] * batch)
    new = 5
    out = encoder.model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                 return_dict_in_generate=True)
    cached = inputs["input_ids"].shape[1] + new - 1  # the last token is sampled, never fed back
    assert kv_cache_bytes(Shapes.of(encoder.model.config), cached, batch, 4) == cache_bytes(out.past_key_values)


SMALL = Shapes(layers=2, hidden=16, intermediate=40, heads=4, kv_heads=2, vocab=100, tied=False, vision_width=8)


@pytest.mark.parametrize(("patches", "batch", "expected"), [
    # KV 2·2 layers·8 wide·15 tokens·3·2 B = 2,880; prefill 3·10·(2·40 + 4·16)·2 = 8,640; logits 2·3·100·4 B = 2,400
    (0, 3, 2880 + 8640 + 2400),
    # KV 960; the vision tower's 1,000 patches · (32 + 4·8) · 2 = 128,000 outweigh the prefill's 2,880; logits 800
    (1000, 1, 960 + 128000 + 800),
])
def test_the_working_memory_terms(patches, batch, expected):
    """The module docstring's terms worked out by hand at small widths (kv width 2 heads · 4, vision MLP 4 · 8)."""
    assert think_bytes(SMALL, prompt_tokens=10, new_tokens=5, vision_patches=patches, batch=batch, dtype_bytes=2) == expected


def test_the_doctors_case_is_one_prompt_in_bf16_with_the_cast_head_for_fp8():
    typical = think_bytes(SMALL, TYPICAL_PROMPT_TOKENS, TYPICAL_NEW_TOKENS, TYPICAL_PATCHES, 1, 2) + CUDA_CONTEXT_BYTES
    assert typical_think_bytes(SMALL, casts_weights=False) == typical
    assert typical_think_bytes(SMALL, casts_weights=True) == typical + 100 * 16 * 2
    # Qwen2-VL-7B's lm_head in bf16: the 1.09 GB the docstring names
    assert typical_think_bytes(QWEN2_VL_7B, True) - typical_think_bytes(QWEN2_VL_7B, False) == 152064 * 3584 * 2


def test_the_think_reserves_its_working_memory_in_comfyuis_load(tiny_vlm_folder, monkeypatch):
    nodes = pack().vlm_nodes
    patcher = nodes.vlm_patcher(tiny_vlm_folder, CPU, torch.float32, "default")
    reserved = []
    real = nodes.mm.load_models_gpu
    monkeypatch.setattr(nodes.mm, "load_models_gpu", lambda models, memory_required=0, **kw:
                        reserved.append(memory_required) or real(models, memory_required=memory_required, **kw))
    request = pack().vlm.VLMRequest("a red car")
    sampling = SamplingOptions(max_new_tokens=3, greedy=True)
    nodes.think(patcher, request, sampling, 3136, 12845056)
    inputs = patcher.model.prepare([request], max_new_tokens=3)
    assert reserved == [nodes.think_memory_required(patcher.model, inputs, 3)]
    largest = max(p.numel() for p in patcher.model.parameters()) * 4  # a streamed layer's cast copy (the embedding)
    assert reserved[0] > largest + kv_cache_bytes(Shapes.of(patcher.model.model.config), inputs["input_ids"].shape[1] + 3, 1, 4)


@pytest.mark.skipif(COMFYUI_VERSION == "0.3.75", reason="ComfyUI 0.3.75's load list counts no cast copies")
def test_comfyuis_load_list_counts_each_fp8_layers_copy_in_the_working_precision(tiny_vlm_folder):
    patcher = pack().vlm_nodes.vlm_patcher(tiny_vlm_folder, CPU, torch.bfloat16, "fp8_e4m3fn")
    fp8 = 0
    for offload_cost, module_bytes, name, module, _ in patcher._load_list():
        weight = getattr(module, "weight", None)
        if weight is not None and weight.dtype == torch.float8_e4m3fn:
            fp8 += 1
            assert offload_cost == module_bytes + weight.numel() * 2, name  # the bf16 copy a forward makes
    assert fp8 == 2 * 7 + 1  # 2 layers x (q, k, v, o, gate, up, down) and the untied head
