"""Fixed-length T5 token lists, checked against the real T5 tokenizer with diffusers' padding/truncation."""

import pytest
from transformers import AutoTokenizer

from tests.support.paths import T5_TOKENIZER
from thinkdiff.text_tokens import fit_tokens

END, PAD = 1, 0


@pytest.fixture(scope="module")
def t5():
    return AutoTokenizer.from_pretrained(str(T5_TOKENIZER))


def comfy_style(ids: list[int], min_length: int = 256) -> list[tuple]:
    """What ComfyUI's T5XXLTokenizer yields: (id, weight, word id) + end token, padded to at least 256."""
    tokens = [(i, 1.0, 1) for i in ids] + [(END, 1.0, 0)]
    return tokens + [(PAD, 1.0, 0)] * max(0, min_length - len(tokens))


@pytest.mark.parametrize("length", [128, 161])
@pytest.mark.parametrize("text", ["", "a dog", "a panda playing guitar in a bamboo forest, " * 30])
def test_same_ids_as_diffusers_max_sequence_length(t5, text, length):
    """diffusers: tokenizer(text, padding='max_length', max_length=L, truncation=True) -- end token kept."""
    expected = t5(text, padding="max_length", max_length=length, truncation=True).input_ids
    ids = t5(text, add_special_tokens=False).input_ids
    fitted = fit_tokens(comfy_style(ids), length, END, PAD)
    assert [t[0] for t in fitted] == expected
    assert len(fitted) == length and all(len(t) == 3 for t in fitted)


def test_cogvideox_total():
    """65 image tokens + T5 text at 226 - 65 = 161 tokens = CogVideoX's 226."""
    assert 65 + len(fit_tokens(comfy_style([5] * 400), 226 - 65, END, PAD)) == 226


def test_single_end_token():
    assert fit_tokens(comfy_style([7, 8]), 1, END, PAD) == [(END, 1.0, 0)]
    assert fit_tokens([], 3, END, PAD) == [(END, 1.0), (PAD, 1.0), (PAD, 1.0)]


def test_bad_length():
    with pytest.raises(ValueError):
        fit_tokens([], 0, END, PAD)


def test_a_prompt_of_only_the_end_token_is_padded():
    assert fit_tokens([(END, 1.0, 0)], 3, END, PAD) == [(END, 1.0, 0), (PAD, 1.0, 0), (PAD, 1.0, 0)]


def test_the_length_error_says_what_is_wrong():
    with pytest.raises(ValueError, match="length must be at least 1, got 0"):
        fit_tokens([(END, 1.0)], 0, END, PAD)
