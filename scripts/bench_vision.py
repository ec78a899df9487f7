"""Benchmark ThinkDiff-CLIP image encoding: throughput and the cost of building conditioning, in one run.

    python scripts/bench_vision.py --width tiny
    python scripts/bench_vision.py --width real --layers 2            # EVA ViT-g widths (1408), few layers, CPU
    python scripts/bench_vision.py --width real --device cuda --dtype bf16   # full 39-layer tower on a GPU

For batch 1 and 8 it times (medians over --repeats, interleaved):
  forward   the vision tower alone on preprocessed pixels             -- the floor
  tokens    forward + CLS/8x8 token construction (thinkdiff.vision)
  cond      tokens + aligner (real: 1408 -> 4096 -> 4096) + joining 128 T5 tokens -- the conditioning build
  encode    preprocessing (PIL resize + normalise) + tokens          -- what the node does per image
and prints images/s and each run's ratio to ``forward``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import Blip2VisionConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.tiny_models import TINY_VISION_TOWER, random_aligner  # noqa: E402
from thinkdiff.dtypes import DTYPES  # noqa: E402
from thinkdiff.vision import VisionTokenEncoder  # noqa: E402

EVA_VIT_G = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16, image_size=224,
                 patch_size=14, qkv_bias=True, layer_norm_eps=1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--layers", type=int, help="override the number of layers (real: 39)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    dims = dict(TINY_VISION_TOWER) if args.width == "tiny" else dict(EVA_VIT_G)
    if args.layers:
        dims["num_hidden_layers"] = args.layers
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    with device:
        torch.manual_seed(0)
        encoder = VisionTokenEncoder.from_config(Blip2VisionConfig(**dims)).to(dtype)
        out = 32 if args.width == "tiny" else 4096  # the tiny test aligner, or the release's 1408 -> 4096 -> 4096
        aligner = random_aligner(dims["hidden_size"], out * (4 if args.width == "tiny" else 1), out).to(device)
        text = torch.randn(1, 128, out, device=device)
    params = sum(p.numel() for p in encoder.parameters())
    print(f"vision tower: {args.width} ({dims['hidden_size']} wide, {dims['num_hidden_layers']} layers, {params / 1e6:.1f} M params), "
          f"{args.dtype} on {args.device}, torch {torch.__version__}")

    print(f"{'batch':>5} {'run':8} {'ms':>9} {'images/s':>9} {'vs forward':>10}")
    for batch in (1, 8):
        images = [Image.new("RGB", (512 + 16 * i, 384), (30 * i, 100, 200)) for i in range(batch)]
        times = time_runs(encoder, aligner, text, images, args.repeats)
        floor = statistics.median(times["forward"])
        for name, samples in times.items():
            t = statistics.median(samples)
            print(f"{batch:5} {name:8} {t * 1000:9.2f} {batch / t:9.1f} {t / floor:10.3f}")


def time_runs(encoder: VisionTokenEncoder, aligner: torch.nn.Module, text: torch.Tensor, images: list[Image.Image],
              repeats: int) -> dict[str, list[float]]:
    parameter = next(encoder.parameters())
    pixels = encoder.preprocess(images).to(parameter.device)
    runs = {
        "forward": lambda: encoder.model(pixel_values=pixels.to(parameter.dtype)).last_hidden_state,
        "tokens": lambda: encoder(pixels),
        "cond": lambda: torch.cat([aligner(encoder(pixels).float()).reshape(1, -1, text.shape[-1]), text], dim=1),
        "encode": lambda: encoder(encoder.preprocess(images).to(parameter.device)),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(repeats + 1):  # the first round warms up
        for name, run in runs.items():
            _sync(parameter.device)
            started = time.perf_counter()
            run()
            _sync(parameter.device)
            if repeat:
                times[name].append(time.perf_counter() - started)
    return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
