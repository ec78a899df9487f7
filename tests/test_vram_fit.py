"""The bitsandbytes refusal (``check_fits``) against fake GPUs: weights and working memory against what the card has
free, counting the models ComfyUI would evict; every figure in GB of 10**9 bytes, as the doctor says."""

from __future__ import annotations

import types

import pytest
import torch

from tests.support.comfy_pack import pack
from thinkdiff.qwen2_vl_sizes import QWEN2_VL_7B
from thinkdiff.think_memory import typical_think_bytes
from thinkdiff.vram_advice import QWEN2_VL_7B_GB

pytestmark = pytest.mark.comfyui
ThinkDiffError = pack().errors.ThinkDiffError  # the pack's own class (mounted as thinkdiff_pack)
GPU = torch.device("cuda", 0)
GB = 10**9
WORKING = typical_think_bytes(QWEN2_VL_7B, casts_weights=False)


def fake_vlm(weights: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(load_device=GPU, model_size=lambda: int(QWEN2_VL_7B_GB[weights] * GB))


@pytest.fixture
def card(monkeypatch):
    """``card(free_gb, evictable_gb)``: the GPU's free bytes and one other model ComfyUI holds there (e.g. Flux)."""
    mm = pack().comfy_models.mm

    def make(free_gb: float, evictable_gb: float = 0.0) -> None:
        monkeypatch.setattr(mm, "get_free_memory", lambda device=None, torch_free_too=False: int(free_gb * GB))
        other = types.SimpleNamespace(device=GPU, model=types.SimpleNamespace(loaded_size=lambda: int(evictable_gb * GB)))
        monkeypatch.setattr(mm, "current_loaded_models", [other] if evictable_gb else [])

    return make


def test_nf4_thinks_on_an_8_gb_card_with_7_2_gb_free(card):
    card(7.2)
    assert QWEN2_VL_7B_GB["bnb_nf4"] * GB + WORKING <= 7.2 * GB  # the case the format is for
    pack().comfy_models.check_fits(fake_vlm("bnb_nf4"), "bnb_nf4", WORKING)


def test_8bit_on_that_card_is_refused_in_gb_of_10_9_bytes_naming_what_fits(card):
    card(7.2)
    with pytest.raises(ThinkDiffError) as refused:
        pack().comfy_models.check_fits(fake_vlm("bnb_8bit"), "bnb_8bit", WORKING)
    message = str(refused.value)
    assert f"needs 9.4 GB of weights and about {WORKING / GB:.1f} GB" in message and "has 7.2 GB free" in message
    assert "fp8_e4m3fn or default" in message and "bnb_nf4" in message and "6.2 GB" in message


def test_memory_comfyui_can_free_by_evicting_counts(card):
    """7.2 GB free plus a 4 GB model ComfyUI unloads before the VLM loads: the 8-bit VLM (9.4 GB + working memory)
    fits; with a 1 GB model it does not."""
    assert QWEN2_VL_7B_GB["bnb_8bit"] * GB + WORKING <= 11.2 * GB
    card(7.2, evictable_gb=4.0)
    pack().comfy_models.check_fits(fake_vlm("bnb_8bit"), "bnb_8bit", WORKING)
    card(7.2, evictable_gb=1.0)
    with pytest.raises(ThinkDiffError, match="has 8.2 GB free"):
        pack().comfy_models.check_fits(fake_vlm("bnb_8bit"), "bnb_8bit", WORKING)


def test_working_memory_is_part_of_the_fit(card):
    card(QWEN2_VL_7B_GB["bnb_nf4"] + 0.1)  # the weights alone fit
    with pytest.raises(ThinkDiffError, match="to think"):
        pack().comfy_models.check_fits(fake_vlm("bnb_nf4"), "bnb_nf4", WORKING)


@pytest.mark.parametrize("weights", ["default", "fp8_e4m3fn"])
def test_streamable_formats_are_never_refused(card, weights):
    card(1.0)
    pack().comfy_models.check_fits(fake_vlm(weights), weights, WORKING)
