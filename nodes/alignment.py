"""Running the aligner inside ComfyUI: dimension checks and memory-managed execution."""

from __future__ import annotations

import comfy.model_management as mm
import torch

from ..thinkdiff.aligner import Aligner
from ..thinkdiff.errors import ThinkDiffError
from .comfy_models import load_for_use


def align(aligner_patcher, features: torch.Tensor, source: str) -> torch.Tensor:
    """Project ``features`` [..., in] token-wise; returns [1, tokens, out] on ComfyUI's intermediate device."""
    aligner: Aligner = aligner_patcher.model
    if features.shape[-1] != aligner.in_dim:
        raise ThinkDiffError(
            f"{source} gives {features.shape[-1]}-wide features but {aligner.description} expects {aligner.in_dim}. "
            "Use the aligner trained for this encoder (release: thinkdiff_lvlm for Qwen2-VL-7B, 3584 wide; "
            "thinkdiff_clip for BLIP-2's EVA ViT-g, 1408 wide).")
    aligner = load_for_use(aligner_patcher)
    device = next(aligner.parameters()).device
    with torch.inference_mode():
        aligned = aligner(features.reshape(-1, features.shape[-1]).to(device=device, dtype=torch.float32))
    return aligned.unsqueeze(0).to(mm.intermediate_device())


def _check_t5_width(aligner_patcher, t5_width: int) -> None:
    aligner: Aligner = aligner_patcher.model
    if aligner.out_dim != t5_width:
        raise ThinkDiffError(
            f"{aligner.description} outputs {aligner.out_dim}-wide tokens but the connected T5 is {t5_width} wide, so the "
            "diffusion model cannot read them. Use the aligner trained for this T5 (the release aligners output 4096, "
            "T5-XXL's width, for Flux.1 and CogVideoX) or connect the text encoder of the model you sample with.")


def aligned_conditioning(aligner_patcher, features: torch.Tensor, source: str, text_cond: torch.Tensor | None = None,
                         t5_width: int | None = None) -> torch.Tensor:
    """[aligner(features) tokens, then ``text_cond``'s T5 tokens (the reference's order)]: [1, tokens, out].

    The aligner's tokens stand in for (or join) the connected T5's, so their widths must be equal: the width of
    ``text_cond``, or ``t5_width`` when a T5 is known without text, is checked before the aligner runs.
    """
    width = text_cond.shape[-1] if text_cond is not None else t5_width
    if width is not None:
        _check_t5_width(aligner_patcher, width)
    cond = align(aligner_patcher, features, source)
    return cond if text_cond is None else torch.cat([cond, text_cond.to(cond)], dim=1)
