"""The ComfyUI models that read T5-XXL (v1.1) encoder states, and how ThinkDiff's aligned tokens join their conditioning.

The aligners map into the T5-XXL encoder space, so every model conditioned on that space can read them. ComfyUI lays
the conditioning out per model; one table (``FAMILIES``, keyed by the class name of the CLIP's tokenizer, which is what
``comfy.sd.load_clip`` picks per CLIP type) holds what differs, and one assembly path (``text_min_length`` then
``join_t5``) builds all of them:

- the T5 part is the end of the conditioning (SD3 puts CLIP-L/G's states, zero-padded to 4096, before it);
- ComfyUI pads the T5 prompt to a minimum length (``min_tokens``); the aligned tokens count towards it and the appended
  text fills the rest, padded by ComfyUI's tokenizer as for any prompt;
- masked models carry ``attention_mask`` over the T5 part: 1 for the aligned tokens, the text's own mask after them;
- everything else (pooled vector, further keys, SD3's CLIP-L/G part) is what ComfyUI's text encoder gives for the text.
No ComfyUI import: the node layer (``nodes/t5_nodes.py``) runs the CLIP and hands its encoding over.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ThinkDiffError

MASK = "attention_mask"


@dataclass(frozen=True)
class T5Family:
    """How one ComfyUI text encoder lays out T5-XXL conditioning."""

    name: str
    clip_types: tuple[str, ...]  # CLIPLoader's types that load it
    min_tokens: int  # ComfyUI's tokenizer pads the T5 prompt to at least this many tokens
    masked: bool  # the conditioning carries attention_mask over the T5 part


FAMILIES: dict[str, T5Family] = {
    "SD3Tokenizer": T5Family("SD3 / SD3.5", ("sd3",), 77, False),
    "PixArtTokenizer": T5Family("Chroma / PixArt-Σ", ("chroma", "pixart"), 1, False),
    "LTXVT5Tokenizer": T5Family("LTX-Video v1", ("ltxv",), 128, True),
    "MochiT5Tokenizer": T5Family("Mochi", ("mochi",), 256, True),
    "CogVideoXTokenizer": T5Family("CogVideoX", ("cogvideox",), 226, False),
}

SUPPORTED = ", ".join(f"{family.name} (type {'/'.join(family.clip_types)})" for family in FAMILIES.values())
LOAD_T5 = ("Load t5xxl (T5-XXL v1.1, e.g. t5xxl_fp16.safetensors) with CLIPLoader for the model you sample: "
           f"{SUPPORTED}; for SD3/SD3.5 TripleCLIPLoader (clip_l, clip_g, t5xxl) works too.")
NOT_TRAINED_FOR = "whose space the aligners were not trained for, so {model} cannot read ThinkDiff tokens. " + LOAD_T5

WRONG_PAIRINGS: dict[str, str] = {
    "FluxTokenizer": "it is Flux's text encoder (CLIP-L + T5): use 'ThinkDiff → Flux Conditioning' or "
                     "'ThinkDiff-CLIP → Flux Conditioning' for Flux. " + LOAD_T5,
    "WanT5Tokenizer": "it is Wan's UMT5-XXL, a different (multilingual) T5 " + NOT_TRAINED_FOR.format(model="Wan"),
    "CosmosT5Tokenizer": "it is Cosmos's original T5 (not v1.1, 1024 wide) " + NOT_TRAINED_FOR.format(model="Cosmos"),
    "HiDreamTokenizer": "it is HiDream's, which also reads a Llama-3.1 stream that ThinkDiff cannot supply (there is "
                        "no T5-only path into HiDream). " + LOAD_T5,
}


def family_for(tokenizer_name: str) -> T5Family:
    """The family of a CLIP whose tokenizer class is ``tokenizer_name``; a clear error for every other CLIP."""
    if tokenizer_name in FAMILIES:
        return FAMILIES[tokenizer_name]
    why = WRONG_PAIRINGS.get(tokenizer_name, f"it has no T5-XXL that ThinkDiff supports ({tokenizer_name}). {LOAD_T5}")
    raise ThinkDiffError(f"the connected CLIP cannot read ThinkDiff tokens: {why}")


def text_min_length(family: T5Family, aligned_tokens: int, text: str) -> int:
    """The T5 length the appended ``text`` must fill (ComfyUI's tokenizer pads it to this): the family's minimum less
    the aligned tokens, at least its end token; 0 (no T5 text part at all, as the paper feeds Flux) when there is no
    text and the aligned tokens reach the minimum by themselves."""
    fill = family.min_tokens - aligned_tokens
    return max(fill, 1 if text.strip() else 0)


def join_t5(cond: torch.Tensor, extras: dict, t5_tokens: int, aligned: torch.Tensor,
            keep_text: bool) -> tuple[torch.Tensor, dict]:
    """ComfyUI's encoding of the text (``cond`` [1, T, D] whose last ``t5_tokens`` are its T5 part, ``extras`` its
    other keys) with ``aligned`` [1, n, D] at the start of the T5 part (which is dropped unless ``keep_text``): the
    conditioning and its keys, ``attention_mask`` (over the T5 part) led by n ones."""
    prefix = cond.shape[1] - t5_tokens
    if prefix < 0:
        raise ValueError(f"a {cond.shape[1]}-token conditioning has no {t5_tokens}-token T5 part")
    text = cond[:, prefix:] if keep_text else cond[:, :0]
    joined = torch.cat([cond[:, :prefix], aligned.to(cond), text], dim=1)
    extras = dict(extras)
    if MASK in extras:
        mask = extras[MASK] if keep_text else extras[MASK][:, :0]
        ones = torch.ones(mask.shape[0], aligned.shape[1], dtype=mask.dtype, device=mask.device)
        extras[MASK] = torch.cat([ones, mask], dim=1)
    return joined, extras
