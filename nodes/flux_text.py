"""Flux text pieces of ThinkDiff conditioning, through the user's own Flux CLIP (clip_l + t5xxl).

ComfyUI's Flux tokenizer pads T5 to at least 256 tokens; the reference (diffusers, max_sequence_length
128) pads or truncates to exactly 128 and keeps the end token (see ``thinkdiff.text_tokens``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..thinkdiff.errors import ThinkDiffError
from ..thinkdiff.text_tokens import fit_tokens

FLUX_POOLED_WIDTH = 768

def _flux_tokens(clip: Any, text: str) -> dict[str, list]:
    tokens = clip.tokenize(text)
    if not {"l", "t5xxl"} <= set(tokens):
        raise ThinkDiffError("the connected CLIP is not a Flux text encoder: load clip_l + t5xxl with "
                             "DualCLIPLoader (type: flux).")
    return tokens


def encode_text(clip: Any, text: str, t5_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux T5 states of ``text`` at exactly ``t5_length`` tokens, and CLIP-L's pooled vector of it."""
    tokens = _flux_tokens(clip, text)
    t5 = clip.tokenizer.t5xxl
    tokens["t5xxl"] = [fit_tokens(tokens["t5xxl"][0], t5_length, t5.end_token, t5.pad_token)]
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return cond, pooled


def pooled_only(clip: Any, text: str) -> torch.Tensor:
    """CLIP-L's pooled vector of ``text``; T5 is given a single end token so it costs nothing."""
    tokens = _flux_tokens(clip, text)
    t5 = clip.tokenizer.t5xxl
    tokens["t5xxl"] = [fit_tokens([], 1, t5.end_token, t5.pad_token)]
    return clip.encode_from_tokens(tokens, return_pooled=True)[1]
