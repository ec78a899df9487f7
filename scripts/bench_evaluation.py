"""Per-sample cost of the CoBSAT evaluation on tiny random models, all figures from one run, and the GPU-hour estimate.

    .dev/venv/bin/python scripts/bench_evaluation.py              # diffusers backend + judges
    .dev/venv/bin/python scripts/bench_evaluation.py --comfyui    # also the comfyui backend (starts a ComfyUI server)

Measured (wall time, median over --repeats batches after one warm-up batch, synthetic stand-in images 128x128; the load
average is printed because other jobs on the machine slow every figure down):
  generate   the diffusers backend at the paper's settings (128 tokens, 512x512, 28 steps): one batch of --batch samples,
             split into the VLM (prepare + generate, timed inside the call) and Flux (aligner + pipeline, the rest)
  comfyui    the same settings through a ComfyUI server (tiny models), --batch prompts queued at once
  judge      LLaVA (two questions per image, --batch questions per call, answers cut at 4 tokens as a real judge's
             "3</s>") and the CLIP metric, per image
Estimated: the full run (10 tasks x 1000 samples x 2 shot counts) at real sizes, from the per-sample GPU costs in
GPU_SECONDS below (see docs/evaluation.md for where each comes from).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from evaluation.cobsat.comfyui_backend import ComfyUIBackend  # noqa: E402
from evaluation.cobsat.config import EvalConfig, load_config  # noqa: E402
from evaluation.cobsat.diffusers_backend import DiffusersBackend  # noqa: E402
from evaluation.cobsat.generate import fixed_batches  # noqa: E402
from evaluation.cobsat.judges import ClipMetric, LlavaJudge  # noqa: E402
from evaluation.cobsat.protocol import TASKS, question  # noqa: E402
from evaluation.cobsat.synthetic import render, write_prompt_list, write_standin  # noqa: E402
from tests.evaluation.tiny_eval_models import make_clip, make_flux, make_llava  # noqa: E402
from tests.support.tiny_models import make_aligner, make_qwen2vl  # noqa: E402

SAMPLES = 20_000  # 10 tasks x 1000 prompts x (2-shot + 4-shot)
# Real-size seconds per sample on one H100 (bf16), ESTIMATES; docs/evaluation.md gives their sources.
GPU_SECONDS = {
    "Qwen2-VL-7B, 128 tokens, batch 8": 0.5,
    "Flux.1-dev 512x512, 28 steps (+ VAE)": 2.0,
    "LLaVA-1.5-13B, 2 questions, batch 8": 0.15,
    "CLIP ViT-B/32": 0.01,
}
A100_FACTOR = 2.5  # H100 SXM vs A100 80GB on these bf16 workloads (estimate)


def median_seconds(run, repeats: int) -> tuple[float, object]:
    """Median wall time of ``run()`` over ``repeats`` calls after one warm-up, and the last call's result."""
    run()
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def base_config(folder: Path, backend: str, *overrides: str) -> EvalConfig:
    return load_config(None, [f"run.output_dir={quoted(folder / 'run')}", "run.tasks=[1]", "run.shots=[2, 4]",
                              "run.samples_per_task=64", f"data.prompt_list={quoted(folder / 'prompts.json')}",
                              f"data.dataset_root={quoted(folder / 'datasets')}", f'generate.backend="{backend}"', *overrides])


def quoted(path: Path) -> str:
    return json.dumps(str(path))


def bench_diffusers(folder: Path, batch: int, repeats: int) -> dict[str, float]:
    config = base_config(folder, "diffusers", f"diffusers.vlm={quoted(folder / 'vlm')}",
                         f"diffusers.aligner={quoted(folder / 'aligner.safetensors')}", f"diffusers.flux={quoted(folder / 'flux')}",
                         'diffusers.vlm_dtype="fp32"', 'diffusers.flux_dtype="fp32"', 'diffusers.device="cpu"',
                         f"generate.batch_size={batch}")
    backend = DiffusersBackend(config, "cpu")
    out = {}
    for shot in (2, 4):
        samples = next(b for b in fixed_batches(config.samples(), batch) if b[0].shot == shot)
        seeds = [config.run.seed + s.index for s in samples]
        seconds, results = median_seconds(lambda s=samples, d=seeds: backend.generate(s, d), repeats)
        vlm = results[0].vlm_seconds  # the VLM's share, timed inside the same call
        out |= {f"generate {shot}-shot: VLM": vlm, f"generate {shot}-shot: Flux": seconds / len(samples) - vlm,
                f"generate {shot}-shot: total": seconds / len(samples)}
    return out


def bench_comfyui(folder: Path, batch: int, repeats: int) -> dict[str, float]:
    from tests.support.comfy_server import ComfyServer
    from tests.support.tiny_comfy import make_tiny_base, swap_to_tiny

    base = make_tiny_base(folder / "comfy_base")
    with ComfyServer(base) as server:
        config = base_config(folder, "comfyui", f"comfyui.url={quoted(server.url)}", f"generate.batch_size={batch}")
        backend = ComfyUIBackend(config, swap_to_tiny)
        out = {}
        seeds = itertools.count()  # new seeds every repeat: ComfyUI would otherwise answer from its cache
        for shot in (2, 4):
            samples = next(b for b in fixed_batches(config.samples(), batch) if b[0].shot == shot)
            seconds, _ = median_seconds(lambda s=samples: backend.generate(s, [next(seeds) for _ in s]), repeats)
            out[f"comfyui {shot}-shot: total"] = seconds / len(samples)
    return out


def bench_judges(folder: Path, batch: int, repeats: int) -> dict[str, float]:
    images = []
    for index, colour in enumerate(("red", "blue", "green", "black")):
        path = folder / f"judge_{index}.jpg"
        render(TASKS[1], colour, "car").save(path)
        images.append(path)
    questions = [(path, question(TASKS[1], part)) for path in images for part in ("detail", "obj")][:batch]
    llava = LlavaJudge(folder / "llava", torch.float32, torch.device("cpu"), max_new_tokens=4)
    clip = ClipMetric(folder / "clip", "cpu")
    sample = next(s for s in base_config(folder, "oracle").samples())
    llava_seconds, _ = median_seconds(lambda: llava.answer(questions), repeats)
    clip_seconds, _ = median_seconds(lambda: clip.score(images[0], sample), repeats)
    return {"judge LLaVA (2 questions)": llava_seconds / len(questions) * 2, "judge CLIP metric": clip_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--comfyui", action="store_true", help="also time the comfyui backend (starts a ComfyUI server)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; tiny random models; batch {args.batch}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_standin(folder / "datasets")
        write_prompt_list(folder / "prompts.json")
        make_qwen2vl(folder / "vlm")
        make_aligner(folder / "aligner.safetensors")
        make_flux(folder / "flux")
        make_llava(folder / "llava")
        make_clip(folder / "clip")
        print("measured, seconds per sample (CPU, tiny models)")
        for bench in (bench_diffusers, bench_comfyui, bench_judges):
            if bench is not bench_comfyui or args.comfyui:
                for name, seconds in bench(folder, args.batch, args.repeats).items():
                    print(f"  {name:32s} {seconds:8.3f}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    per_sample = sum(GPU_SECONDS.values())
    print(f"\nestimated, real sizes on one H100 (bf16): {json.dumps(GPU_SECONDS)}")
    print(f"  {per_sample:.2f} s per sample x {SAMPLES} samples = {per_sample * SAMPLES / 3600:.1f} H100 GPU-hours "
          f"(about {per_sample * SAMPLES * A100_FACTOR / 3600:.0f} A100 GPU-hours)")


if __name__ == "__main__":
    main()
