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


def check_t5_width(aligner_patcher, t5_width: int) -> None:
    """The aligner's tokens stand in for (or join) this T5's: their widths must be equal. Checked before anything runs."""
    aligner: Aligner = aligner_patcher.model
    if aligner.out_dim != t5_width:
        raise ThinkDiffError(
            f"{aligner.description} outputs {aligner.out_dim}-wide tokens but the connected T5 is {t5_width} wide, so the "
            "diffusion model cannot read them. Use the aligner trained for this T5 (the release aligners output 4096, "
            "T5-XXL's width, for Flux.1 and CogVideoX) or connect the text encoder of the model you sample with.")


def join_text(cond: torch.Tensor, text_cond: torch.Tensor) -> torch.Tensor:
    """Append T5 text tokens after the aligned tokens (the reference's order)."""
    return torch.cat([cond, text_cond.to(cond)], dim=1)
