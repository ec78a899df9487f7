"""``generate``: one image per sample, written where CoBSAT's ``evaluation_icl.py`` looks for it.

Layout: see ``records.py`` (a sample with a ``.json`` record is finished). Samples are cut
into fixed batches of ``batch_size`` consecutive prompt-list entries per (shot, task); sample ``i`` uses seed ``seed + i`` and a VLM batch
samples with the seed of its first entry, so a batch gives the same result however often the run is restarted. A
restarted run skips finished batches and redoes a partly finished batch whole, writing only its missing samples.

Scale-out: batch ``b`` belongs to worker ``b mod W``; the workers are ``num_shards`` independent jobs (``[run]
shard_index``) times the processes of each (``accelerate launch``), so GPUs and nodes split the run without talking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from thinkdiff.atomic_files import write_text_atomically
from thinkdiff.errors import ThinkDiffError
from thinkdiff.progress import Progress

from .config import EvalConfig
from .records import Backend, Generated, image_file, record_file, sample_dir
from .samples import Sample, by_shot_and_task, check_dataset_root

JPEG_QUALITY = 95
# Settings that must not change while an images folder is being filled (besides the backend's models).
FIXED_SETTINGS = ("instruction", "max_new_tokens", "temperature", "top_p", "min_pixels", "max_pixels", "width", "height",
                  "steps", "guidance")
COMFYUI_MODELS = ("vlm", "aligner", "unet", "clip_l", "t5", "vae")


def fixed_batches(samples: Sequence[Sample], batch_size: int) -> list[list[Sample]]:
    """Consecutive chunks of each (shot, task) in prompt-list order; a chunk never spans two tasks or shot counts."""
    return [group[i:i + batch_size] for _, group in by_shot_and_task(samples) for i in range(0, len(group), batch_size)]


def write_outputs(images_dir: Path, sample: Sample, seed: int, result: Generated, seconds: float, backend: str) -> None:
    folder = sample_dir(images_dir, sample)
    folder.mkdir(parents=True, exist_ok=True)
    result.image.convert("RGB").save(image_file(images_dir, sample), quality=JPEG_QUALITY)
    (folder / f"{sample.save_name}.txt").write_text(result.text, encoding="utf-8")
    record = {"task": sample.task, "shot": sample.shot, "index": sample.index, "save_name": sample.save_name, "seed": seed,
              "backend": backend, "gt": sample.gt, "vlm_text": result.text, "vlm_tokens": result.tokens,
              "seconds": round(seconds, 4), "vlm_seconds": round(result.vlm_seconds, 4)}
    write_text_atomically(record_file(images_dir, sample), json.dumps(record, indent=1))


def manifest(config: EvalConfig) -> dict[str, Any]:
    """What decides the images besides the samples and their seeds."""
    gen, models = config.generate, config.diffusers
    entries = {"backend": gen.backend, "seed": config.run.seed, **{k: getattr(gen, k) for k in FIXED_SETTINGS}}
    if gen.backend == "diffusers":  # a VLM batch samples jointly: its size changes the answers
        entries.update(vlm=Path(models.vlm).name, aligner=Path(models.aligner).name, flux=Path(models.flux).name,
                       vlm_dtype=models.vlm_dtype, flux_dtype=models.flux_dtype, batch_size=gen.batch_size)
    elif gen.backend == "comfyui":
        entries.update(workflow=Path(config.comfyui.workflow).name, **{k: getattr(config.comfyui, k) for k in COMFYUI_MODELS})
    return entries


def check_manifest(images_dir: Path, expected: dict[str, Any]) -> None:
    """Refuse to mix images made with other settings into the folder."""
    path = images_dir / "manifest.json"
    existing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else expected
    changed = sorted(k for k in set(existing) | set(expected) if existing.get(k) != expected.get(k))
    if changed:
        raise ThinkDiffError(f"{images_dir} holds images made with other settings ({', '.join(changed)} differ); "
                             "use another [run] output_dir or restore the settings of images/manifest.json")


def write_manifest(images_dir: Path, expected: dict[str, Any]) -> None:
    """Record the settings with the first images (a run that fails before it has made any leaves nothing behind)."""
    path = images_dir / "manifest.json"
    if not path.is_file():
        images_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(expected, indent=1))


def load_backend(config: EvalConfig, device: str, graph_hook: Callable[[dict], dict] | None = None) -> Backend:
    """The configured backend, models loaded (``device``: the diffusers backend's)."""
    backend = config.generate.backend
    if backend == "diffusers":
        from .diffusers_backend import DiffusersBackend

        return DiffusersBackend(config, device)
    if backend == "comfyui":
        from .comfyui_backend import ComfyUIBackend

        return ComfyUIBackend(config, graph_hook)
    from .synthetic import DrawingBackend

    return DrawingBackend(oracle=backend == "oracle")


def generate(config: EvalConfig, graph_hook: Callable[[dict], dict] | None = None) -> Path:
    """Fill ``OUTPUT_DIR/images`` for this worker's batches; returns the folder. ``graph_hook`` (comfyui backend) may
    rewrite each API graph before it is queued."""
    from accelerate import Accelerator

    state = Accelerator()  # the process's place under `accelerate launch` (one process otherwise)
    run, gen = config.run, config.generate
    samples = config.samples()
    if gen.backend in ("diffusers", "comfyui"):
        check_dataset_root(config.dataset_root, samples)
    images_dir = config.output_dir / "images"
    workers = run.num_shards * state.num_processes
    worker = run.shard_index * state.num_processes + state.process_index
    mine = fixed_batches(samples, gen.batch_size)[worker::workers]
    todo = [batch for batch in mine if not all(record_file(images_dir, s).is_file() for s in batch)]
    label = f"[generate {worker + 1}/{workers}]"
    print(f"{label} {len(samples)} samples, {sum(map(len, mine))} in this worker's batches, "
          f"{sum(map(len, todo))} to do ({gen.backend})", flush=True)
    if not todo:
        return images_dir
    settings = manifest(config)
    check_manifest(images_dir, settings)
    device = str(state.device) if config.diffusers.device == "auto" else config.diffusers.device
    backend = load_backend(config, device, graph_hook)
    progress = Progress(sum(map(len, todo)), label, gen.progress_every_s)
    for batch in todo:
        seeds = [run.seed + s.index for s in batch]
        started = time.perf_counter()
        results = backend.generate(batch, seeds)
        seconds = (time.perf_counter() - started) / len(batch)
        write_manifest(images_dir, settings)
        for sample, seed, result in zip(batch, seeds, results, strict=True):
            if not record_file(images_dir, sample).is_file():
                write_outputs(images_dir, sample, seed, result, seconds, gen.backend)
        progress.update(len(batch), sum(r.tokens for r in results))
    return images_dir
