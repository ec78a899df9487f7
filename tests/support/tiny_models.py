"""Tiny random models with real tokenizers, saved the way users store real ones.

Every builder is seeded, so the same call gives the same weights. The weights look trained where it matters: non-zero
biases and norm weights other than one (random initialisation gives zeros and ones, so a path that drops a bias or a
norm would pass), and Qwen2-VL's lm_head untied from its embeddings as in Qwen2-VL-7B, ThinkDiff's VLM (``tied=True``
gives the 2B's tied head). Sizes:
  tiny Qwen2-VL  text hidden 64, 2 layers; vision depth 2      (real Qwen2 tokenizer from the ComfyUI tree)
  tiny aligner   64 -> 128 -> 32                              (output = the tiny Flux's T5 width)
  tiny vision    BLIP-2 vision tower 48 wide, 2 layers, 224 px, patch 14 (CLIP-variant aligner 48 -> 128 -> 32: every
                 width differs, so a skipped step cannot pass)
Flux/CogVideoX/CLIP/T5/VAE test weights come from comfy_weights.py (ComfyUI's own classes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    Blip2VisionConfig,
    Blip2VisionModel,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)

from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import AlignerWeights, save_aligner_weights
from thinkdiff.prompts import QWEN2_VL_CHAT_TEMPLATE
from thinkdiff.vision import save_vision_file

from .paths import QWEN_TOKENIZER

try:  # transformers 5: PIL image processor, works without torchvision
    from transformers import Qwen2VLImageProcessorPil as QwenImageProcessor
except ImportError:
    from transformers import Qwen2VLImageProcessor as QwenImageProcessor

QWEN_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                vision_end_token_id=151653, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
TINY_VISION = dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2)
# Real sizes of Qwen2-VL-2B / 7B (benchmarks pass fewer layers on the CPU); the tiny ones stand for the 7B (untied head).
WIDTHS = {
    "tiny": (TINY_TEXT, TINY_VISION, False),
    # vLLM's CPU attention takes head sizes of 32 and up: 2 heads x 32 (1 KV head), mrope_section summing to 32 / 2.
    "tiny-hd32": (dict(TINY_TEXT, num_attention_heads=2, num_key_value_heads=1, rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]}),
                  TINY_VISION, False),
    "2b": (dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
           dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4), True),
    "7b": (dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
           dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4), False),
}
# Qwen2-VL-7B-Instruct's generation_config.json: sampling values that must NOT leak into ThinkDiff's sampling.
QWEN_GENERATION_CONFIG = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                          "eos_token_id": [151645, 151643], "repetition_penalty": 1.05,
                          "temperature": 0.01, "top_k": 1, "top_p": 0.001}


def qwen2vl_config(width: str = "tiny", text_layers: int | None = None, vision_layers: int | None = None,
                   tied: bool | None = None) -> Qwen2VLConfig:
    """The config of ``width`` (``tied``: the head tied to the embeddings; default: as that real model)."""
    text, vision, real_tied = WIDTHS[width]
    tied = real_tied if tied is None else tied
    text = dict(text, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=tied)
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
    vision = dict(vision, hidden_size=text["hidden_size"], in_chans=3, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    if vision_layers is not None:
        vision["depth"] = vision_layers
    if "text_config" in getattr(Qwen2VLConfig, "sub_configs", {}):
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tied, **QWEN_IDS)
    return Qwen2VLConfig(**text, vision_config=vision, **QWEN_IDS)  # transformers < 4.53: text settings at the top level


def qwen2vl_processor(min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280) -> Qwen2VLProcessor:
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    image_processor = QwenImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    try:
        from transformers import Qwen2VLVideoProcessor
        return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2_VL_CHAT_TEMPLATE)
    except ImportError:  # transformers < 4.52 has no video processor class
        return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE)


def trained_looking(model: nn.Module) -> nn.Module:
    """Give every bias random values (std 0.1) and every norm weight values in [0.5, 1.5], in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
                module.weight.uniform_(0.5, 1.5)
            for name, parameter in module.named_parameters(recurse=False):
                if name.endswith("bias"):  # Linear and LayerNorm biases, BLIP-2's q_bias / v_bias
                    parameter.normal_(0.0, 0.1)
    return model


def make_qwen2vl(folder: Path, width: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32,
                 text_layers: int | None = None, vision_layers: int | None = None, tied: bool | None = None) -> Path:
    """Save a random Qwen2-VL as a Hugging Face folder (weights, config, processor, generation config)."""
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(qwen2vl_config(width, text_layers, vision_layers, tied))
    model = trained_looking(model).to(dtype).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    qwen2vl_processor().save_pretrained(str(folder))
    (folder / "generation_config.json").write_text(json.dumps(QWEN_GENERATION_CONFIG, indent=1))
    return folder


def random_aligner(in_dim: int, hidden_dim: int = 128, out_dim: int = 4096, seed: int = 0) -> Aligner:
    """A seeded aligner with a non-trivial norm weight (as after the reference's T5-norm initialisation)."""
    torch.manual_seed(seed)
    aligner = Aligner(in_dim, hidden_dim, out_dim)
    with torch.no_grad():
        aligner.norm.weight.uniform_(0.05, 0.3)
    return aligner


def make_aligner(path: Path, in_dim: int = 64, hidden_dim: int = 128, out_dim: int = 32, seed: int = 0,
                 variant: str = "lvlm") -> Path:
    aligner = random_aligner(in_dim, hidden_dim, out_dim, seed)
    return save_aligner_weights(AlignerWeights(aligner.state_dict()), path, variant=variant,
                                source_model="tiny random test model (not trained)")


TINY_VISION_TOWER = dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         image_size=224, patch_size=14)


def tiny_vision_config(**overrides) -> Blip2VisionConfig:
    """BLIP-2's vision tower at 32 wide, 2 layers; 224 px / patch 14 = the reference's 16x16 grid."""
    return Blip2VisionConfig(**{**TINY_VISION_TOWER, **overrides})


def make_vision(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_vision_file(trained_looking(Blip2VisionModel(tiny_vision_config())).eval(), path,
                            source_model="tiny random BLIP-2 vision (test)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True, help="a ComfyUI models folder to write into")
    args = parser.parse_args()
    make_qwen2vl(args.models / "LLM" / "tiny-random-Qwen2-VL")
    make_aligner(args.models / "thinkdiff" / "tiny-random-aligner.safetensors")


if __name__ == "__main__":
    main()
