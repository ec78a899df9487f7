"""Tiny random diffusers pipelines fed with ThinkDiff embeddings (no text encoders)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel


def tiny_cogvideox(text_width: int, text_length: int = 226) -> CogVideoXPipeline:
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=4,
        text_embed_dim=text_width, num_layers=1, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=text_length)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_cogvideox_frames(positive: torch.Tensor, negative: torch.Tensor) -> np.ndarray:
    """9 frames of 16x16 from CogVideoXPipeline(prompt_embeds=positive, negative_prompt_embeds=negative), 2 steps, CFG 6."""
    pipe = tiny_cogvideox(positive.shape[-1], positive.shape[1])
    return pipe(prompt_embeds=positive, negative_prompt_embeds=negative, height=16, width=16, num_frames=9,
                num_inference_steps=2, guidance_scale=6.0, generator=torch.Generator().manual_seed(0), output_type="np").frames
