"""What the VLM reserves and accounts in ComfyUI's memory manager: the think's working memory is handed to
``load_models_gpu``, its KV-cache term is the cache transformers really builds, and ComfyUI 0.33's load list counts
each fp8 layer's copy in the working precision (the loader names that precision as ``manual_cast_dtype``)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.support.comfy_pack import pack
from tests.support.paths import COMFYUI_VERSION
from thinkdiff.qwen2_vl_sizes import Shapes
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.think_memory import kv_cache_bytes
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


def test_the_kv_cache_term_is_the_cache_transformers_builds(encoder):
    inputs = encoder.prepare([VLMRequest("<image> what is this?", [Image.new("RGB", (84, 56), "red")])])
    new = 5
    out = encoder.model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                 return_dict_in_generate=True)
    cached = inputs["input_ids"].shape[1] + new - 1  # the last token is sampled, never fed back
    assert kv_cache_bytes(Shapes.of(encoder.model.config), cached, 1, 4) == cache_bytes(out.past_key_values)


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
