"""T5 and CLIP-L pieces of ThinkDiff conditioning, through the user's own text encoders (a ComfyUI CLIP).

ComfyUI pads T5 to at least 256 (Flux) or 226 (CogVideoX) tokens; the reference (diffusers,
``max_sequence_length``) pads or truncates to an exact length and keeps the end token (``thinkdiff.text_tokens``).
Only the CLIP's public API is used (``tokenize`` / ``encode_from_tokens``): T5's end and pad ids are read from how it
tokenizes the empty prompt, so any CLIP whose tokens carry a ``t5xxl`` part works (Flux, SD3, CogVideoX, ...).
"""

from __future__ import annotations

from typing import Any

import torch

from ..thinkdiff.errors import ThinkDiffError
from ..thinkdiff.text_tokens import fit_tokens

FLUX_POOLED_WIDTH = 768
T5 = "t5xxl"

NOT_FLUX = "it is not a Flux text encoder: load clip_l + t5xxl with DualCLIPLoader (type: flux)."
NO_T5 = "it has no T5-XXL (load t5xxl with DualCLIPLoader type flux, or CLIPLoader type sd3/cogvideox)."


def _tokens(clip: Any, text: str, needs: set[str], what: str) -> dict[str, list]:
    tokens = clip.tokenize(text)
    if not needs <= set(tokens):
        raise ThinkDiffError(f"the connected CLIP cannot encode this: {what}")
    return tokens


def t5_end_and_pad(clip: Any) -> tuple[int, int]:
    """T5's end and pad token ids: the empty prompt tokenizes to ``[end, pad, pad, ...]`` (ComfyUI pads T5 prompts)."""
    empty = clip.tokenize("")[T5][0]
    if len(empty) < 2:
        raise ThinkDiffError("the connected CLIP's T5 tokenizer does not pad prompts, so its pad token is unknown: "
                             "load the T5 with DualCLIPLoader (type flux) or CLIPLoader (type sd3 or cogvideox).")
    return int(empty[0][0]), int(empty[-1][0])


def _fit_t5(clip: Any, tokens: dict[str, list], length: int) -> None:
    end, pad = t5_end_and_pad(clip)
    tokens[T5] = [fit_tokens(tokens[T5][0], length, end, pad)]


def _encode(clip: Any, text: str, length: int, needs: set[str], what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    tokens = _tokens(clip, text, needs, what)
    _fit_t5(clip, tokens, length)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    if cond.shape[1] != length:
        raise ThinkDiffError(f"this CLIP returned {cond.shape[1]} tokens for a {length}-token T5 prompt: load only the T5 "
                             "(or clip_l + t5xxl for Flux).")
    return cond, pooled


def t5_encode(clip: Any, text: str, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """T5 states of ``text`` at exactly ``length`` tokens [1, length, D], and the pooled vector the CLIP returns."""
    return _encode(clip, text, length, {T5}, NO_T5)


def flux_text(clip: Any, text: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux T5 states of ``text`` at ``length`` tokens and CLIP-L's pooled vector of it, as diffusers' FluxPipeline."""
    return _encode(clip, text, length, {"l", T5}, NOT_FLUX)


def flux_pooled(clip: Any, text: str) -> tuple[int, torch.Tensor]:
    """T5's width and CLIP-L's pooled vector of ``text``; T5 is given a single end token so it costs next to nothing."""
    cond, pooled = flux_text(clip, text, 1)
    return int(cond.shape[-1]), pooled
