"""The proxy tasks' random splits and T5 targets, exactly as the reference draws them.

Each draw consumes a ``random.Random`` the way the reference consumes the global ``random`` module
(``randint`` calls in the same order), so the same seed gives the same splits. Training seeds one
generator per sample from ``(seed, epoch, index)``, which makes the draws independent of batch
composition, DataLoader workers and process count, and lets a resumed run redraw them identically.
"""

from __future__ import annotations

import random
import re
from typing import Any

import torch

IGNORE_INDEX = -100
_CAPTION_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
_WHITESPACE_RUN = re.compile(r"\s{2,}")


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The generator for one sample's draws (string seeds hash the same in every process)."""
    return random.Random(f"{seed}:{epoch}:{index}")


def draw_split(rng: random.Random, length: int, max_split: int) -> int | None:
    """LVLM split point ``s ~ U{1..min(L-1, max_split)}``; ``None`` when ``L < 2`` (the reference crashes there)."""
    if length < 2:
        return None
    return rng.randint(1, min(length - 1, max_split))


def clean_caption(caption: str, max_words: int = 50) -> str:
    """BLIP's ``pre_caption``: lowercase, punctuation to spaces, collapse whitespace runs, strip, first ``max_words`` words."""
    caption = _CAPTION_PUNCTUATION.sub(" ", caption.lower())
    caption = _WHITESPACE_RUN.sub(" ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


def split_caption(rng: random.Random, caption: str) -> tuple[str, str]:
    """CLIP proxy split at a random word: ``(first part, rest)``; one word or less gives ``("", caption)``."""
    words = caption.split(" ")
    if len(words) <= 1:
        return "", caption
    point = rng.randint(1, len(words) - 1)
    return " ".join(words[:point]), " ".join(words[point:])


def t5_tokens(tokenizer: Any, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask as the reference tokenizes: longest padding, truncation, EOS appended."""
    encoded = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, add_special_tokens=True,
                        return_tensors="pt")
    return encoded.input_ids, encoded.attention_mask


def t5_labels(tokenizer: Any, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder labels (padding -> -100) and the decoder attention mask; T5 shifts labels right itself."""
    ids, mask = t5_tokens(tokenizer, texts, max_length)
    return ids.masked_fill(mask == 0, IGNORE_INDEX), mask
