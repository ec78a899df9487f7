"""The T5 family table and the one assembly path (thinkdiff.t5_families), without ComfyUI.

The server tests (tests/test_t5_models.py) check every family against core CLIPTextEncode and the refusals on the node;
these cover what a tiny model cannot: SD3's CLIP-L/G part before the T5 part (ComfyUI pads it to a hard-coded 4096).
"""

import pytest
import torch

from thinkdiff.errors import ThinkDiffError
from thinkdiff.t5_families import FAMILIES, MASK, family_for, join_t5, text_min_length

SD3 = FAMILIES["SD3Tokenizer"]


@pytest.mark.parametrize(("tokenizer", "fix"), [
    ("FluxTokenizer", "use 'ThinkDiff → Flux Conditioning' or 'ThinkDiff-CLIP → Flux Conditioning' for Flux"),
    ("WanT5Tokenizer", "Wan's UMT5-XXL, a different (multilingual) T5 whose space the aligners were not trained for"),
    ("CosmosT5Tokenizer", "Cosmos's original T5 (not v1.1, 1024 wide)"),
    ("HiDreamTokenizer", "also reads a Llama-3.1 stream that ThinkDiff cannot supply (there is no T5-only path"),
    ("SD1Tokenizer", "it has no T5-XXL that ThinkDiff supports (SD1Tokenizer)"),
])
def test_other_text_encoders_are_refused_with_what_to_load(tokenizer, fix):
    with pytest.raises(ThinkDiffError) as error:
        family_for(tokenizer)
    assert fix in str(error.value)
    assert "Load t5xxl (T5-XXL v1.1, e.g. t5xxl_fp16.safetensors) with CLIPLoader" in str(error.value)
    assert "SD3 / SD3.5 (type sd3), Chroma / PixArt-Σ (type chroma/pixart), LTX-Video v1 (type ltxv)" in str(error.value)


@pytest.mark.parametrize(("aligned", "text", "expected"), [
    (10, "", 67), (10, "a cat", 67), (77, "", 0), (90, "", 0), (77, "a cat", 1), (90, " ", 0), (90, "a", 1)])
def test_the_text_fills_the_minimum_after_the_aligned_tokens(aligned, text, expected):
    assert text_min_length(SD3, aligned, text) == expected


def test_sd3s_clip_part_stays_before_the_aligned_tokens_and_the_t5_text():
    clip_part, t5_part, aligned = torch.randn(1, 77, 8), torch.randn(1, 5, 8), torch.randn(1, 3, 8, dtype=torch.float64)
    pooled = torch.randn(1, 2048)
    cond, extras = join_t5(torch.cat([clip_part, t5_part], 1), {"pooled_output": pooled}, 5, aligned, keep_text=True)
    assert torch.equal(cond, torch.cat([clip_part, aligned.float(), t5_part], 1)) and cond.dtype == torch.float32
    assert extras.keys() == {"pooled_output"} and extras["pooled_output"] is pooled
    cond, _ = join_t5(torch.cat([clip_part, t5_part], 1), {}, 5, aligned, keep_text=False)
    assert torch.equal(cond, torch.cat([clip_part, aligned.float()], 1))


@pytest.mark.parametrize("keep_text", [True, False])
def test_the_mask_is_led_by_ones_for_the_aligned_tokens(keep_text):
    """Three aligned tokens 2 wide; the mask keeps its dtype."""
    mask = torch.tensor([[1, 1, 0, 0]], dtype=torch.int32)
    cond, extras = join_t5(torch.zeros(1, 4, 2), {MASK: mask}, 4, torch.ones(1, 3, 2), keep_text=keep_text)
    expected = torch.tensor([[1, 1, 1, 1, 1, 0, 0]] if keep_text else [[1, 1, 1]], dtype=torch.int32)
    assert extras[MASK].dtype == torch.int32 and torch.equal(extras[MASK], expected)
    assert cond.shape == (1, 7 if keep_text else 3, 2)


def test_the_mask_stays_on_its_device():
    """ComfyUI may keep the mask on another device than the states (``meta`` stands in for it here)."""
    mask = torch.ones(1, 4, dtype=torch.int32, device="meta")
    _, extras = join_t5(torch.zeros(1, 4, 2), {MASK: mask}, 4, torch.ones(1, 3, 2), keep_text=True)
    assert (extras[MASK].device.type, extras[MASK].dtype, extras[MASK].shape) == ("meta", torch.int32, (1, 7))


def test_a_t5_part_longer_than_the_conditioning_is_a_bug():
    with pytest.raises(ValueError, match="^a 4-token conditioning has no 5-token T5 part$"):
        join_t5(torch.zeros(1, 4, 2), {}, 5, torch.ones(1, 2, 2), keep_text=True)
