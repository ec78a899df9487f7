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
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
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
from thinkdiff.qwen2_vl_sizes import QWEN2_VL, Shapes
from thinkdiff.vision import save_vision_file

from .paths import QWEN_TOKENIZER

try:  # transformers 5: PIL image processor, works without torchvision
    from transformers import Qwen2VLImageProcessorPil as QwenImageProcessor
except ImportError:
    from transformers import Qwen2VLImageProcessor as QwenImageProcessor

QWEN_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                vision_end_token_id=151653, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
# The tiny test widths (they stand for the 7B: an untied head), and the real sizes of Qwen2-VL-2B / 7B from the library
# (benchmarks pass fewer layers).
TINY = Shapes(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=151936, tied=False, vision_depth=2,
              vision_width=32, vision_heads=2, vision_mlp_ratio=2, mrope_section=(2, 3, 3))
# bitsandbytes' 4-bit layers run on the CPU only from 64 inputs (its block size): the tiny model, 64 wide throughout
TINY_64 = dataclasses.replace(TINY, vision_width=64)
WIDTHS = {
    "tiny": TINY,
    # vLLM's CPU attention takes head sizes of 32 and up: 2 heads x 32 (1 KV head), mrope_section summing to 32 / 2.
    "tiny-hd32": dataclasses.replace(TINY, heads=2, kv_heads=1, mrope_section=(4, 6, 6)),
    **QWEN2_VL,
}
# Qwen2-VL-7B-Instruct's generation_config.json: sampling values that must NOT leak into ThinkDiff's sampling.
QWEN_GENERATION_CONFIG = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                          "eos_token_id": [151645, 151643], "repetition_penalty": 1.05,
                          "temperature": 0.01, "top_k": 1, "top_p": 0.001}

# transformers 4.x sets bitsandbytes up on a CPU only with Intel's extension; 5.x runs it there (bitsandbytes >= 0.46)
BITSANDBYTES_ON_CPU = int(transformers.__version__.split(".")[0]) >= 5


def qwen2vl_config(width: str | Shapes = "tiny", text_layers: int | None = None, vision_layers: int | None = None,
                   tied: bool | None = None) -> Qwen2VLConfig:
    """The config of ``width`` (``tied``: the head tied to the embeddings; default: as that model)."""
    shapes = WIDTHS[width] if isinstance(width, str) else width
    if tied is not None:
        shapes = dataclasses.replace(shapes, tied=tied)
    if text_layers is not None:
        shapes = dataclasses.replace(shapes, layers=text_layers)
    if vision_layers is not None:
        shapes = dataclasses.replace(shapes, vision_depth=vision_layers)
    text, vision = dict(shapes.text_config(), max_position_embeddings=32768), shapes.vision_config()
    if "text_config" in getattr(Qwen2VLConfig, "sub_configs", {}):
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=shapes.tied, **QWEN_IDS)
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


def make_qwen2vl(folder: Path, width: str | Shapes = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32,
                 text_layers: int | None = None, vision_layers: int | None = None, tied: bool | None = None,
                 init: Callable[[nn.Module], object] | None = None, device: str = "cpu") -> Path:
    """Save a random Qwen2-VL as a Hugging Face folder (weights, config, processor, generation config), with biases and
    norms as :func:`trained_looking` sets them; ``init`` may then overwrite the weights (e.g.
    ``trained_like.make_trained_like``). ``device`` is where the weights are drawn (a GPU draws a real-size model in
    seconds)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = trained_looking(Qwen2VLForConditionalGeneration(qwen2vl_config(width, text_layers, vision_layers, tied)))
    if init is not None:
        init(model)
    model = model.to(dtype).eval()
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
    """BLIP-2's vision tower at 48 wide, 2 layers; 224 px / patch 14 = the reference's 16x16 grid."""
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
