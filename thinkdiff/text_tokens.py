"""Fixed-length T5 token lists, as diffusers' ``max_sequence_length`` produces them.

ComfyUI tokenizers yield lists of ``(token id, weight[, word id])`` tuples and pad Flux's T5 to at least
256 tokens; the reference pads or truncates to exactly 128 (CogVideoX: 226 - 65 = 161) and always keeps
the end token.
"""

from __future__ import annotations

Token = tuple  # (token id, weight[, word id])


def fit_tokens(tokens: list[Token], length: int, end_token: int, pad_token: int) -> list[Token]:
    """Pad or truncate one tokenized prompt to ``length`` tokens, ending its text with ``end_token``."""
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    text = [t for t in tokens if t[0] not in (end_token, pad_token)][: length - 1]
    filler = (1.0,) + tuple(0 for _ in tokens[0][2:]) if tokens else (1.0,)
    fitted = text + [(end_token, *filler)]
    return fitted + [(pad_token, *filler)] * (length - len(fitted))
