"""The one source of Qwen2-VL's sizes against real models: parameter counts of transformers' own model (on the meta
device, so the real 2B and 7B cost nothing), and the bytes each weight format really stores in a loaded tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import Qwen2VLForConditionalGeneration

from tests.support.tiny_models import TINY, WIDTHS, make_qwen2vl, qwen2vl_config
from thinkdiff.qwen2_vl_sizes import QWEN2_VL, Shapes
from thinkdiff.vlm import QwenVLEncoder
from thinkdiff.weight_formats import WEIGHT_FORMATS, stored_bytes

# Widths that all differ (a term computed from the wrong width cannot pass), untied (the tiny models) and tied heads.
TIED = dataclasses.replace(TINY, tied=True, hidden=48, intermediate=80, heads=3, kv_heads=1, vision_width=40,
                           vision_mlp_ratio=3, vision_heads=4)
# Patch sizes and merges other than Qwen2-VL's 14 / 2 / 2, so that a field left out of the config cannot read back.
PATCHES = dataclasses.replace(TINY, patch=16, temporal_patch=1, merge=3)
SHAPES = {"tiny": TINY, "tiny-hd32": WIDTHS["tiny-hd32"], "tied": TIED, "patches": PATCHES, **QWEN2_VL}


def meta_model(shapes: Shapes) -> torch.nn.Module:
    with torch.device("meta"):
        return Qwen2VLForConditionalGeneration(qwen2vl_config(shapes))


@pytest.mark.parametrize("name", SHAPES)
def test_the_parameter_count_is_transformers_own(name):
    model = meta_model(SHAPES[name])
    assert SHAPES[name].parameters() == sum(p.numel() for p in model.parameters())  # a tied head once


@pytest.mark.parametrize("name", SHAPES)
def test_shapes_read_back_from_the_config(name):
    assert Shapes.of(qwen2vl_config(SHAPES[name])) == SHAPES[name]


def test_the_released_sizes():
    """Qwen2-VL-2B-Instruct and 7B-Instruct as their model cards give them (2.21 B and 8.29 B parameters)."""
    assert round(QWEN2_VL["2b"].parameters() / 1e9, 2) == 2.21 and QWEN2_VL["2b"].tied
    assert round(QWEN2_VL["7b"].parameters() / 1e9, 2) == 8.29 and not QWEN2_VL["7b"].tied
    # the README's weight-format table (bf16 unless quantized)
    assert {w: round(QWEN2_VL["7b"].weight_bytes(w) / 1e9, 1) for w in WEIGHT_FORMATS} == {
        "default": 16.6, "fp8_e4m3fn": 9.5, "bnb_8bit": 9.4, "bnb_nf4": 6.2}


def test_a_config_without_rope_scaling_has_qwen2_vls_mrope_sections():
    config = qwen2vl_config(TINY)
    config.get_text_config().rope_scaling = None
    assert Shapes.of(config).mrope_section == (16, 24, 24)


@pytest.fixture(scope="module", params=["tiny", "tied"])
def folder(request, tmp_path_factory):
    return make_qwen2vl(tmp_path_factory.mktemp("sizes") / request.param, width=SHAPES[request.param]), SHAPES[request.param]


def buffer_bytes(model: torch.nn.Module) -> int:
    return sum(b.numel() * b.element_size() for b in model.buffers())  # the rotary tables: not weights


@pytest.mark.parametrize("weights", WEIGHT_FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_bytes_each_format_stores(folder, weights, dtype):
    path, shapes = folder
    if weights.startswith("bnb_"):
        pytest.importorskip("bitsandbytes")
    try:
        model = QwenVLEncoder.from_folder(path, dtype=dtype, weights=weights).model
    except Exception as e:  # transformers 4.x: no bitsandbytes on a CPU
        if weights.startswith("bnb_"):
            pytest.skip(f"bitsandbytes cannot run here: {e}")
        raise
    assert shapes.weight_bytes(weights, dtype.itemsize) == stored_bytes(model) - buffer_bytes(model)
