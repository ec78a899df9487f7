"""The proxy tasks' random draws and targets against the reference's code (re-stated here), on fixed seeds."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from transformers import AutoTokenizer

from tests.support.paths import QWEN_TOKENIZER, T5_TOKENIZER
from training.masking import IGNORE_INDEX, clean_caption, draw_split, sample_rng, split_caption, t5_labels
from training.objectives import lvlm_target_text


def reference_lvlm_collate(lengths: list[int], seed: int, max_split: int = 128) -> list[int]:
    """The reference collater's draw (llava_instruct_dataset_mllama_embed_2.py): global ``random.randint``."""
    random.seed(seed)
    return [random.randint(1, min(length - 1, max_split)) for length in lengths]


def reference_random_split_string(s: str) -> tuple[str, str]:
    words = s.split(" ")
    if len(words) <= 1:
        return "", s
    split_point = random.randint(1, len(words) - 1)
    return " ".join(words[:split_point]), " ".join(words[split_point:])


def test_lvlm_splits_match_the_reference_draws():
    lengths = [2, 3, 17, 128, 129, 200, 256, 5] * 25
    rng = random.Random(1234)
    assert [draw_split(rng, n, 128) for n in lengths] == reference_lvlm_collate(lengths, 1234)


def test_lvlm_split_is_uniform_on_1_to_min_l_minus_1_and_128():
    for length, top in ((40, 39), (256, 128)):
        counts = Counter(draw_split(sample_rng(7, 0, i), length, 128) for i in range(200 * top))
        assert set(counts) == set(range(1, top + 1))
        expected = 200
        assert all(abs(c - expected) < 5 * expected**0.5 for c in counts.values()), counts  # within 5 sigma


def test_single_token_answers_are_skipped_not_crashing():
    assert draw_split(random.Random(0), 1, 128) is None
    assert draw_split(random.Random(0), 0, 128) is None
    assert draw_split(random.Random(0), 2, 128) == 1


def test_per_sample_generators_are_independent_of_order():
    first = [draw_split(sample_rng(3, 1, i), 100, 128) for i in range(50)]
    again = [draw_split(sample_rng(3, 1, i), 100, 128) for i in reversed(range(50))][::-1]
    assert first == again
    assert first != [draw_split(sample_rng(3, 2, i), 100, 128) for i in range(50)]  # a new epoch redraws


@pytest.fixture(scope="module")
def qwen():
    return AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))


@pytest.fixture(scope="module")
def t5():
    return AutoTokenizer.from_pretrained(str(T5_TOKENIZER))


def test_target_text_is_the_qwen_decoding_of_the_remaining_ids(qwen):
    answer = "A tabby cat sleeps on a wooden chair next to a window."
    ids = torch.tensor(qwen(answer).input_ids + [151645])  # generated answers end with <|im_end|>
    split = draw_split(random.Random(5), len(ids), 128)
    target = lvlm_target_text(qwen, ids, split)
    assert target == qwen.batch_decode([ids[split:]], skip_special_tokens=True)[0]
    assert qwen.decode(ids[:split]) + target == answer  # prefix features + target text = the whole answer
    assert "<|im_end|>" not in target


def test_t5_labels_pad_to_minus_100_keep_eos_and_truncate_at_128(t5):
    labels, mask = t5_labels(t5, ["a photo of a red car", "word " * 300, ""], 128)
    assert labels.shape == (3, 128)
    assert labels[0, :9].tolist() == [3, 9, 1202, 13, 3, 9, 1131, 443, 1]
    assert (labels[0, 9:] == IGNORE_INDEX).all() and mask[0].sum() == 9
    assert labels[1, -1] == 1 and mask[1].all()  # truncated to 127 tokens + EOS
    assert labels[2, 0] == 1 and (labels[2, 1:] == IGNORE_INDEX).all()  # empty target: just EOS


def test_caption_cleaning_is_blips():
    assert clean_caption('A "Red" car:  parked; (outside)!  ') == "a red car parked outside"
    assert clean_caption(" ".join(map(str, range(80)))) == " ".join(map(str, range(50)))
    assert clean_caption("...") == ""


def test_caption_split_matches_the_reference():
    captions = ["a red car parked outside", "cat", "", "two words"] * 10
    random.seed(99)
    expected = [reference_random_split_string(c) for c in captions]
    rng = random.Random(99)
    assert [split_caption(rng, c) for c in captions] == expected
    assert split_caption(random.Random(0), "cat") == ("", "cat")
