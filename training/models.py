"""Frozen models of the proxy tasks and the trainable aligner, initialised as the reference does.

- T5: a Flan-T5(-XXL) Hugging Face folder. LVLM keeps only the decoder (and ``lm_head``); CLIP keeps the
  encoder too. The encoder's ``final_layer_norm`` weight, read at its stored precision, initialises the
  aligner's RMSNorm (thinkdiff-reference.md 2.2: essential for stable training).
- Frozen means ``requires_grad=False``; ``t5_dropout`` chooses train mode (reference: dropout active) or eval mode.
- Aligner Linears: PyTorch's default init for LVLM, N(0, 0.02) weights and zero biases for CLIP (HF ``_init_weights``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoTokenizer, T5ForConditionalGeneration

from thinkdiff.aligner import Aligner
from thinkdiff.dtypes import DTYPES
from thinkdiff.errors import ThinkDiffError
from thinkdiff.hf_compat import dtype_kwarg
from thinkdiff.safetensors_header import check_complete
from thinkdiff.vision import VisionTokenEncoder

from .config import Config, Variant

ENCODER_NORM_KEY = "encoder.final_layer_norm.weight"
T5_URL = "https://huggingface.co/google/flan-t5-xxl"
CLIP_INIT_STD = 0.02


@dataclass
class FrozenT5:
    model: T5ForConditionalGeneration  # encoder is None for the LVLM variant
    tokenizer: Any
    encoder_norm: torch.Tensor  # float32 copy of encoder.final_layer_norm.weight
    name: str


def _stored_tensor(folder: Path, key: str) -> torch.Tensor | None:
    """``key`` read from the folder's safetensors at its stored dtype, or None when it is not stored that way."""
    index = folder / "model.safetensors.index.json"
    files = [folder / json.loads(index.read_text())["weight_map"][key]] if index.is_file() else sorted(folder.glob("*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            if key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                return f.get_tensor(key)
    return None


def load_frozen_t5(folder: Path, dtype: torch.dtype, keep_encoder: bool, dropout: bool) -> FrozenT5:
    if not (folder / "config.json").is_file():
        raise ThinkDiffError(f"{folder} is not a T5 model folder; download google/flan-t5-xxl there")
    for weights in sorted(folder.glob("*.safetensors")):
        check_complete(weights, f"download {weights.name} of {T5_URL} again")
    try:
        model = T5ForConditionalGeneration.from_pretrained(str(folder), local_files_only=True, **dtype_kwarg(dtype))
    except (OSError, ValueError) as e:
        raise ThinkDiffError(f"could not load the T5 in {folder}: {e}. It must hold the complete download of {T5_URL}.") from e
    stored = _stored_tensor(folder, ENCODER_NORM_KEY)
    norm = (stored if stored is not None else model.encoder.final_layer_norm.weight).detach().float().clone()
    if not keep_encoder:
        model.encoder = None  # the LVLM proxy task feeds aligned features straight to the decoder
    model.requires_grad_(False).train(dropout)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return FrozenT5(model, tokenizer, norm, folder.name)


def load_vision(path: Path, dtype: torch.dtype) -> VisionTokenEncoder:
    return VisionTokenEncoder.from_file(path, dtype=dtype).requires_grad_(False).eval()


def build_aligner(variant: Variant, in_dim: int, t5: FrozenT5, hidden_dim: int = 0) -> Aligner:
    """A float32 aligner ``in_dim -> hidden -> d_model`` with the reference's init for ``variant``."""
    out_dim = int(t5.model.config.d_model)
    aligner = Aligner(in_dim, hidden_dim or out_dim, out_dim)
    if variant == "clip":
        for linear in (aligner.in_proj, aligner.out_proj):
            nn.init.normal_(linear.weight, std=CLIP_INIT_STD)
            nn.init.zeros_(linear.bias)
    with torch.no_grad():
        aligner.norm.weight.copy_(t5.encoder_norm)
    return aligner


def frozen_t5_from_config(config: Config) -> FrozenT5:
    if not config.model.t5:
        raise ThinkDiffError("set [model] t5 to a Flan-T5 Hugging Face folder")
    return load_frozen_t5(config.path(config.model.t5), DTYPES[config.model.t5_dtype],
                          keep_encoder=config.run.variant == "clip", dropout=config.model.t5_dropout)
