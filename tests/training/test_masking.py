"""The proxy tasks' random draws and targets against the reference's code (re-stated here), on fixed seeds."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from tests.support.paths import QWEN_TOKENIZER, T5_TOKENIZER
from training.masking import IGNORE_INDEX, clean_caption, draw_split, sample_rng, split_caption, t5_labels
from training.objectives import (
    CLIPExample,
    CLIPExamples,
    Collator,
    LVLMExample,
    LVLMExamples,
    PixelPreprocessor,
    lvlm_target_text,
    move_batch,
)
from training.pairs import Pair


def reference_lvlm_collate(lengths: list[int], seed: int, max_split: int = 128) -> list[int]:
    """The reference collater's draw (llava_instruct_dataset_mllama_embed_2.py): global ``random.randint``."""
    random.seed(seed)
    return [random.randint(1, min(length - 1, max_split)) for length in lengths]


def reference_pre_caption(caption: str, max_words: int = 50) -> str:
    """BLIP's ``BlipCaptionProcessor.pre_caption`` (LAVIS blip_processors.py)."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n")
    caption = caption.strip(" ")
    caption_words = caption.split(" ")
    if len(caption_words) > max_words:
        caption = " ".join(caption_words[:max_words])
    return caption


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


@pytest.mark.parametrize("caption", ["\tA cat\t", "A cat\n", "\nA cat", "a\tb c", "a b\tc d", " \n", "a b c", "a b c d"])
@pytest.mark.parametrize("max_words", [2, 3, 50])
def test_caption_cleaning_keeps_blips_single_tabs_and_newlines(caption: str, max_words: int):
    """BLIP strips only a trailing newline and spaces, and counts words between spaces: a lone tab stays inside a word."""
    assert clean_caption(caption, max_words) == reference_pre_caption(caption, max_words)


def test_caption_split_matches_the_reference():
    captions = ["a red car parked outside", "cat", "", "two words", "a\tred car", "tab\tjoined"] * 10
    random.seed(99)
    expected = [reference_random_split_string(c) for c in captions]
    rng = random.Random(99)
    assert [split_caption(rng, c) for c in captions] == expected
    assert split_caption(random.Random(0), "cat") == ("", "cat")


def test_lvlm_examples_split_each_sample_by_its_own_seed(qwen):
    answers = ["A tabby cat sleeps on a wooden chair.", "An astronaut stands in front of a flag.", "Coffee on a table.",
               "A red rocket launches into a clear blue sky with smoke."]
    samples = []
    for answer in answers:
        ids = torch.tensor(qwen(answer).input_ids + [151645])
        samples.append((torch.arange(2.0 * len(ids)).reshape(len(ids), 2), ids))
    samples.append((torch.zeros(1, 2), torch.tensor([151645])))  # a one-token answer: nothing to split
    examples = LVLMExamples(samples, qwen, seed=11, max_split=5)
    assert len(examples) == 5
    for epoch in (0, 3):
        for index, (features, ids) in enumerate(samples[:4]):
            split = random.Random(f"11:{epoch}:{index}").randint(1, min(len(ids) - 1, 5))  # the documented seeding
            example = examples[(epoch, index)]
            assert torch.equal(example.features, features[:split])
            assert example.target == qwen.decode(ids[split:].tolist(), skip_special_tokens=True)
        assert examples[(epoch, 4)] is None


def test_clip_examples_clean_split_and_preprocess_each_pair():
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    pairs = [Pair("a", red, "A Red car (parked) outside the old house!"), None, Pair("c", red, "...!"),
             Pair("d", red, "Cat")]
    examples = CLIPExamples(pairs, PixelPreprocessor(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), seed=5, max_words=4)
    assert len(examples) == 4
    for epoch in (0, 1, 2):
        words = reference_pre_caption(pairs[0].caption, 4).split(" ")
        assert words == ["a", "red", "car", "parked"]
        point = random.Random(f"5:{epoch}:0").randint(1, 3)
        example = examples[(epoch, 0)]
        assert (example.prefix, example.target) == (" ".join(words[:point]), " ".join(words[point:]))
        expected = torch.tensor([2.0, -2.0, -2.0]).view(3, 1, 1).expand(3, 8, 8)  # (1 - 0.5) / 0.25, (0 - 0.5) / 0.25
        assert torch.allclose(example.pixel_values, expected)
        assert examples[(epoch, 1)] is None and examples[(epoch, 2)] is None  # unreadable; nothing left after cleaning
        assert (examples[(epoch, 3)].prefix, examples[(epoch, 3)].target) == ("", "cat")


def test_collator_pads_truncates_and_counts_the_skipped(t5):
    def target(text: str, width: int) -> list[int]:  # the tokenizer's ids cut to width - 1, then EOS, then -100 padding
        ids = t5(text, add_special_tokens=False).input_ids[:width - 1] + [t5.eos_token_id]
        return ids + [IGNORE_INDEX] * (width - len(ids))

    features = torch.arange(10.0).reshape(5, 2)
    lvlm = Collator(t5, 4)([LVLMExample(features[:3], "a photo of a red car"), None, LVLMExample(features[3:].half(), "car")])
    assert (lvlm["samples"], lvlm["skipped"]) == (2, 1)
    assert lvlm["labels"].tolist() == [target("a photo of a red car", 4), target("car", 4)]
    assert lvlm["decoder_attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert lvlm["features"].dtype == torch.float32
    assert lvlm["features"].tolist() == [features[:3].tolist(), features[3:].tolist() + [[0.0, 0.0]]]
    assert lvlm["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]] and lvlm["attention_mask"].dtype == torch.long

    pixels = torch.rand(2, 3, 4, 4)
    clip = Collator(t5, 4)([None, None, CLIPExample(pixels[0], "a photo of a red car", "car"), CLIPExample(pixels[1], "", "a")])
    assert (clip["samples"], clip["skipped"]) == (2, 2)
    assert torch.equal(clip["pixel_values"], pixels)
    assert clip["prefix_ids"].tolist() == [target("a photo of a red car", 4), [t5.eos_token_id] + [t5.pad_token_id] * 3]
    assert clip["prefix_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert Collator(t5, 4)([None, None]) == {"samples": 0, "skipped": 2}


def test_move_batch_moves_the_tensors_and_keeps_the_counts():
    batch = {"samples": 2, "skipped": 1, "labels": torch.tensor([[3, 1]]), "features": torch.rand(1, 2, 3, dtype=torch.float16)}
    moved = move_batch(batch, torch.device("meta"))
    assert (moved["samples"], moved["skipped"]) == (2, 1)
    for key in ("labels", "features"):
        assert moved[key].device.type == "meta" and (moved[key].shape, moved[key].dtype) == (batch[key].shape, batch[key].dtype)
