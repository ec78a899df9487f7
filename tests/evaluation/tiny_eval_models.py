"""Tiny random judge and generator models for the evaluation tests, saved the way users store the real ones.

  tiny LLaVA     llava-hf layout: CLIP vision 32 wide (28 px, patch 14: 4 image tokens), Llama 32 wide, 2 layers each;
                 the real Qwen2 tokenizer (ComfyUI tree) with an added ``<image>`` token
  tiny CLIP      CLIPModel 32 wide (text + vision, 32 px, patch 16), projection 16, the real CLIP tokenizer
  tiny Flux      diffusers FluxPipeline folder: FluxTransformer2DModel (joint width 32 = the tiny aligner's output),
                 TAEF1-shaped AutoencoderTiny, CLIP-L-shaped text encoder 32 wide + the real CLIP tokenizer, no T5
Every builder is seeded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderTiny, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from tests.support.paths import CLIP_TOKENIZER, QWEN_TOKENIZER

TINY_CLIP_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
def clip_tokenizer() -> CLIPTokenizer:
    """The real CLIP tokenizer, limited to CLIP's 77 positions as in Flux and openai/clip-vit-base-patch32."""
    return CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER), model_max_length=77)


FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096)


def make_llava(folder: Path, seed: int = 0) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
                              patch_size=14, projection_dim=16)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         image_seq_length=4)
    LlavaForConditionalGeneration(config).train(False).save_pretrained(str(folder))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(str(folder))
    return folder


def make_clip(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=16)
    CLIPModel(CLIPConfig(text_config=TINY_CLIP_TEXT, vision_config=vision, projection_dim=16)).train(False).save_pretrained(str(folder))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(str(folder))
    return folder


def make_flux(folder: Path, joint_width: int = 32, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=joint_width,
                                         pooled_projection_dim=TINY_CLIP_TEXT["hidden_size"], guidance_embeds=True,
                                         axes_dims_rope=[4, 6, 6])
    vae = AutoencoderTiny(in_channels=3, out_channels=3, latent_channels=16, encoder_block_out_channels=(8,) * 4,
                          decoder_block_out_channels=(8,) * 4, num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4,
                          scaling_factor=1.0, shift_factor=0.0)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae,
                        text_encoder=CLIPTextModel(CLIPTextConfig(**TINY_CLIP_TEXT)),
                        tokenizer=clip_tokenizer(), text_encoder_2=None, tokenizer_2=None,
                        transformer=transformer)
    pipe.save_pretrained(str(folder))
    return folder
