"""Benchmark of the training package on random models, all figures from one run.

    python scripts/bench_training.py --size tiny
    python scripts/bench_training.py --size mid            # stage-B features 1536 wide (Qwen2-VL 2B), T5 d_model 512, ViT 384 wide
    python scripts/bench_training.py --size mid --device cuda --dtype bf16

Stage A (precompute) has its own benchmark with the vLLM backend beside: scripts/bench_stage_a.py.
Stage B (LVLM) and CLIP at batch 8 and 32: samples/s of a full step (data + forward + backward + AdamW) and the
split data / frozen encoders (CLIP: vision + T5 encoder) / aligner (fwd+bwd) / decoder (the rest of the step).
Peak memory: CUDA max_memory_allocated per configuration on a GPU; on the CPU the process's peak RSS so far.
Times are medians over --repeats after one warm-up.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from transformers import AutoTokenizer, Blip2VisionConfig, T5Config, T5ForConditionalGeneration  # noqa: E402

from tests.support.paths import QWEN_TOKENIZER, T5_TOKENIZER  # noqa: E402
from thinkdiff.dtypes import DTYPES  # noqa: E402
from thinkdiff.vision import VisionTokenEncoder  # noqa: E402
from training.config import OptimConfig  # noqa: E402
from training.feature_store import FeatureShards, GeneratedSample, write_manifest, write_shard  # noqa: E402
from training.models import FrozenT5, build_aligner  # noqa: E402
from training.objectives import (  # noqa: E402
    CLIPExamples,
    CLIPObjective,
    Collator,
    LVLMExamples,
    LVLMObjective,
    PixelPreprocessor,
    move_batch,
)
from training.optim import make_optimizer  # noqa: E402
from training.pairs import Pair  # noqa: E402

SIZES = {  # Qwen2-VL hidden size (stage-B features), T5 widths, vision tower
    "tiny": (64, dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
             dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)),
    "mid": (1536, dict(d_model=512, d_kv=64, d_ff=1024, num_layers=4, num_heads=8),
            dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6)),
}


def timed(runs: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each run over ``repeats`` rounds (runs interleaved, so load changes hit all alike) after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(repeats + 1):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            if repeat:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(device: str) -> str:
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return f"{peak:.0f} MiB (CUDA)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process RSS peak so far)"


def random_t5(widths: dict, device: str, dtype: torch.dtype) -> FrozenT5:
    torch.manual_seed(0)
    config = T5Config(vocab_size=32128, num_decoder_layers=widths["num_layers"], feed_forward_proj="gated-gelu",
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **widths)
    model = T5ForConditionalGeneration(copy.deepcopy(config)).to(device, dtype).requires_grad_(False).train()
    return FrozenT5(model, AutoTokenizer.from_pretrained(str(T5_TOKENIZER)), model.encoder.final_layer_norm.weight.float(), "random")


def bench_step(label: str, dataset, collator: Collator, objective, aligner, encoders: Callable | None, args) -> None:
    """Samples/s and the cost split at batch 8 and 32."""
    optimizer = make_optimizer(aligner, OptimConfig())
    for batch_size in (8, 32):
        measure(label, batch_size, dataset, collator, objective, aligner, optimizer, encoders, args)


def measure(label: str, batch_size: int, dataset, collator: Collator, objective, aligner, optimizer, encoders: Callable | None,
            args: argparse.Namespace) -> None:
    device = args.device
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    refs = [(0, i % len(dataset)) for i in range(batch_size)]
    batch = move_batch(collator([dataset[r] for r in refs]), torch.device(device))
    frozen = {}
    if encoders:
        with torch.no_grad():
            frozen["tokens"] = encoders(batch)[0].float()

    def data() -> None:
        collator([dataset[r] for r in refs])

    def step() -> None:
        with autocast:
            loss = objective.loss(aligner, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def aligner_only() -> None:
        with autocast:
            out = aligner(batch["features"] if "features" in batch else frozen["tokens"])
        out.float().sum().backward()
        optimizer.zero_grad(set_to_none=True)

    runs = {"data": data, "step": step, "aligner": aligner_only}
    if encoders:
        runs["frozen"] = lambda: encoders(batch)
    seconds = timed(runs, args.repeats, device)
    frozen_s = seconds.get("frozen", 0.0)
    decoder = seconds["step"] - seconds["aligner"] - frozen_s
    total = seconds["data"] + seconds["step"]
    split = f"data {seconds['data'] / total:5.1%}  aligner {seconds['aligner'] / total:5.1%}  decoder {decoder / total:5.1%}"
    if encoders:
        split += f"  frozen encoders {frozen_s / total:5.1%}"
    print(f"  {label} batch {batch_size:2d}: {batch_size / total:8.1f} samples/s (step {seconds['step'] * 1e3:7.1f} ms, "
          f"data {seconds['data'] * 1e3:6.1f} ms)  {split}  peak {peak_memory(device)}")


def bench_stage_b(args: argparse.Namespace, qwen_width: int, t5: FrozenT5, folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    text = "A tabby cat sleeps on a wooden chair next to a sunny window while rain falls outside. " * 4
    ids = torch.tensor(tokenizer(text).input_ids[:64])
    samples = [GeneratedSample(str(i), "x", torch.randn(len(ids), qwen_width), ids, text) for i in range(64)]
    write_manifest(folder, {"vlm": "random", "vlm_path": str(QWEN_TOKENIZER), "hidden_size": qwen_width})
    write_shard(folder, 0, samples, qwen_width, skipped=0)
    dataset = LVLMExamples(FeatureShards(folder), tokenizer, seed=0, max_split=128)
    aligner = build_aligner("lvlm", qwen_width, t5).to(args.device)
    t5.model.encoder = None
    print(f"\n[stage B, LVLM] features {qwen_width} wide, 64 tokens/answer; T5 d_model {t5.model.config.d_model} "
          f"x {t5.model.config.num_decoder_layers} decoder layers ({args.dtype}); aligner {qwen_width}->{t5.model.config.d_model}")
    bench_step("LVLM", dataset, Collator(t5.tokenizer, 128), LVLMObjective(t5.model), aligner, None, args)


def bench_clip(args: argparse.Namespace, vision_widths: dict, t5: FrozenT5) -> None:
    torch.manual_seed(0)
    vision = VisionTokenEncoder.from_config(Blip2VisionConfig(image_size=224, patch_size=14, **vision_widths))
    vision = vision.to(args.device, DTYPES[args.dtype]).requires_grad_(False)
    captions = ["A red motorcycle parked in a garage next to a wall of tools and a window."] * 8
    pairs = [Pair(str(i), Image.new("RGB", (320, 240), (20 * i, 100, 150)), c) for i, c in enumerate(captions)]
    dataset = CLIPExamples(pairs, PixelPreprocessor.of(vision), seed=0, max_words=50)
    aligner = build_aligner("clip", vision.hidden_size, t5).to(args.device)
    objective = CLIPObjective(t5.model, vision)

    def encoders(batch):
        return vision(batch["pixel_values"]), t5.model.encoder(input_ids=batch["prefix_ids"], attention_mask=batch["prefix_mask"])

    print(f"\n[CLIP] vision tower {vision.hidden_size} wide x {vision_widths['num_hidden_layers']} layers, 224 px -> "
          f"{vision.num_tokens} tokens; T5 d_model {t5.model.config.d_model} ({args.dtype})")
    bench_step("CLIP", dataset, Collator(t5.tokenizer, 32), objective, aligner, encoders, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", choices=["stage-b", "clip"], action="append", default=[])
    args = parser.parse_args()
    qwen_width, t5_widths, vision_widths = SIZES[args.size]
    print(f"bench_training --size {args.size}: torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    with tempfile.TemporaryDirectory() as tmp:
        if "clip" not in args.skip:
            bench_clip(args, vision_widths, random_t5(t5_widths, args.device, DTYPES[args.dtype]))
        if "stage-b" not in args.skip:
            bench_stage_b(args, qwen_width, random_t5(t5_widths, args.device, DTYPES[args.dtype]), Path(tmp) / "features")


if __name__ == "__main__":
    main()
