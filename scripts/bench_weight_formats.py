"""Fidelity and size of the VLM's weight formats, measured in one run.

    .dev/venv/bin/python scripts/bench_weight_formats.py [--width 2b] [--head untied] [--like trained] [--layers 4]
                                                         [--tokens 32] [--device cpu]

A random Qwen2-VL of real widths (2B by default, with an untied head as 7B has, a few layers; 7B on a GPU), with the
tiny test models' non-zero biases and norms and trained-like matrices (tests/support/trained_like.py: σ 0.01-0.03 per
matrix, outlier rows and columns; ``--like init`` keeps transformers' initial matrices), answers one image + prompt
greedily in the reference format (bf16). The same prompt and the same generated tokens are then run teacher-forced through each format:
  cosine      per-row cosine of the final-norm features (the rows ThinkDiff aligns) against the reference's
  agreement   share of positions where the format's greedy token equals the reference's
  weights     bytes of the model's tensors (what ComfyUI's ModelPatcher counts), and that as a share of the reference's
fp8 is measured three ways: the shipped per-row scale, one scale per tensor, and unscaled (the 0.2 format). The fp32
row is the model's sensitivity: the same weights unrounded against the bf16 reference (a format's loss in cosine grows
with the square of its relative weight error: about 0.2 % for bf16, 2 % for e4m3fn). Goals: fp8 min cosine >= 0.999,
4-bit >= 0.97.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.tiny_models import WIDTHS, make_qwen2vl  # noqa: E402
from tests.support.trained_like import make_trained_like  # noqa: E402
from thinkdiff.sampling_options import SamplingOptions  # noqa: E402
from thinkdiff.vlm import QwenVLEncoder, VLMRequest  # noqa: E402
from thinkdiff.weight_formats import Fp8Scaling, store_linears_fp8  # noqa: E402

# row name -> (the loader's weights, then fp8 stored with this scaling or None, the working dtype). The fp32 row is the
# model's sensitivity: how far bf16's own rounding of the weights moves the features (the reference is bf16).
FORMATS: dict[str, tuple[str, Fp8Scaling | None, torch.dtype]] = {
    "fp32": ("default", None, torch.float32),
    "fp8_e4m3fn": ("fp8_e4m3fn", None, torch.bfloat16), "fp8 tensor": ("default", "tensor", torch.bfloat16),
    "fp8 none": ("default", "none", torch.bfloat16),
    "bnb_8bit": ("bnb_8bit", None, torch.bfloat16), "bnb_nf4": ("bnb_nf4", None, torch.bfloat16),
}


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in module.state_dict().values()}.values())


@torch.inference_mode()
def teacher_forced(encoder: QwenVLEncoder, inputs: dict, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-norm rows (row k = the state that predicts token k) and greedy tokens for prompt + ``generated``."""
    prompt = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], generated[None].to(inputs["input_ids"].device)], dim=1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if "mm_token_type_ids" in inputs:
        extra["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(generated[None])], dim=1)
    out = encoder.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, **extra)
    rows = out.hidden_states[-1][0, prompt - 1: prompt - 1 + len(generated)].float().cpu()
    return rows, out.logits[0, prompt - 1: prompt - 1 + len(generated)].argmax(-1).cpu()


def load(folder: Path, name: str) -> QwenVLEncoder:
    weights, scaling, dtype = FORMATS[name]
    encoder = QwenVLEncoder.from_folder(folder, dtype=dtype, weights=weights)
    if scaling is not None:
        store_linears_fp8(encoder.model, scaling)
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", default="2b", choices=["tiny", "2b", "7b"])
    parser.add_argument("--head", default="untied", choices=["untied", "tied"])
    parser.add_argument("--like", default="trained", choices=["trained", "init"])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--formats", default=",".join(FORMATS))
    args = parser.parse_args()
    device = torch.device(args.device)
    shapes = dataclasses.replace(WIDTHS[args.width], tied=args.head == "tied")
    init = make_trained_like if args.like == "trained" else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_qwen2vl(Path(tmp) / "qwen2vl", width=shapes, text_layers=args.layers, vision_layers=2,
                              dtype=torch.bfloat16, init=init)
        image = Image.radial_gradient("L").convert("RGB").resize((448, 336))
        request = [VLMRequest("Describe this picture as a diffusion prompt.", [image])]
        reference = QwenVLEncoder.from_folder(folder, dtype=torch.bfloat16).to(device)
        inputs = reference.prepare(request, max_new_tokens=args.tokens)
        (answer,) = reference.generate(inputs, SamplingOptions(max_new_tokens=args.tokens, greedy=True))
        base_rows, base_tokens = teacher_forced(reference, inputs, answer.token_ids)
        base_bytes = tensor_bytes(reference)
        del reference
        print(f"random Qwen2-VL, {args.width} widths, {args.head} head, {args.like}-like weights, {args.layers} text "
              f"layers, {args.tokens} teacher-forced tokens, {device}")
        print(f"{'weights':12s} {'cosine min':>10s} {'mean':>7s} {'agreement':>9s} {'weights MB':>10s} {'share':>6s} {'load s':>7s}")
        for name in args.formats.split(","):
            started = time.perf_counter()
            try:
                encoder = load(folder, name)
            except Exception as e:  # e.g. bitsandbytes absent or without a backend for this device
                print(f"{name:12s} not measured: {e}")
                continue
            encoder = encoder.to(device) if not name.startswith("bnb") or device.type == "cpu" else encoder
            loaded = time.perf_counter() - started
            rows, tokens = teacher_forced(encoder, encoder.prepare(request, max_new_tokens=args.tokens), answer.token_ids)
            cosine = F.cosine_similarity(rows, base_rows, dim=-1)
            agreement = (tokens == base_tokens).float().mean().item()
            size = tensor_bytes(encoder)
            print(f"{name:12s} {cosine.min().item():10.4f} {cosine.mean().item():7.4f} {agreement:9.3f} "
                  f"{size / 2**20:10.1f} {size / base_bytes:6.3f} {loaded:7.1f}")
            del encoder


if __name__ == "__main__":
    main()
