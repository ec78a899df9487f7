"""Stage B (LVLM) and the CLIP variant: train the aligner against the frozen T5 with Accelerate.

Only the aligner is wrapped for DDP; the frozen models sit on each process's device. What each step reads follows from
the step alone (``batching.StepBatches``: a weighted draw of the source, then that source's seeded per-epoch order, each
process taking its slice of the global batch), so a resumed run replays exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer

from thinkdiff.aligner import Aligner
from thinkdiff.dtypes import DTYPES
from thinkdiff.errors import ThinkDiffError
from thinkdiff.progress import format_duration

from .batching import StepBatches
from .checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config
from .feature_store import FeatureShards
from .metrics import MetricsLog, plot_loss
from .models import build_aligner, frozen_t5_from_config, load_vision
from .objectives import (
    CLIPExamples,
    CLIPObjective,
    Collator,
    LVLMExamples,
    LVLMObjective,
    PixelPreprocessor,
    move_batch,
)
from .optim import make_optimizer, set_learning_rate
from .pairs import pairs_from_config


@dataclass
class Task:
    """What differs between the variants; the loop is shared."""

    dataset: Dataset
    sizes: list[int]  # samples per data source, in the dataset's order
    weights: list[float]  # the sources' shares of the steps
    collator: Collator
    objective: LVLMObjective | CLIPObjective
    aligner: Aligner
    info: dict[str, Any]  # provenance stored in checkpoints and exported files


def build_task(config: Config, device: torch.device) -> Task:
    t5 = frozen_t5_from_config(config)
    t5.model.to(device)
    seed, variant = config.run.seed, config.run.variant
    if variant == "lvlm":
        shards = FeatureShards(config.path(config.precompute.features_dir))
        vlm = config.path(config.precompute.vlm) if config.precompute.vlm else Path(shards.manifest["vlm_path"])
        qwen_tokenizer = AutoTokenizer.from_pretrained(str(vlm), local_files_only=True)
        dataset: Dataset = LVLMExamples(shards, qwen_tokenizer, seed, config.train.max_split_tokens)
        sizes, weights = [len(dataset)], [1.0]
        objective: LVLMObjective | CLIPObjective = LVLMObjective(t5.model)
        in_dim, source = int(shards.manifest["hidden_size"]), shards.manifest["vlm"]
    else:
        if not config.model.vision:
            raise ThinkDiffError("set [model] vision to a vision file (python -m thinkdiff extract-vision BLIP2_FOLDER FILE)")
        vision_path = config.path(config.model.vision)
        vision = load_vision(vision_path, DTYPES[config.model.vision_dtype]).to(device)
        pairs = pairs_from_config(config)
        dataset = CLIPExamples(pairs, PixelPreprocessor.of(vision), seed, config.train.max_caption_words)
        sizes, weights = pairs.sizes, [source.weight for source in config.data.all_sources()]
        objective = CLIPObjective(t5.model, vision)
        in_dim, source = vision.hidden_size, vision_path.name
    torch.manual_seed(seed)
    aligner = build_aligner(variant, in_dim, t5, config.model.aligner_hidden_dim)
    info = {"variant": variant, "source_model": source, "t5_model": t5.name, "config": config.to_dict()}
    return Task(dataset, sizes, weights, Collator(t5.tokenizer, config.max_target_tokens), objective, aligner, info)


def _zero_loss(aligner: nn.Module, in_dim: int) -> torch.Tensor:
    """A loss of 0 through the (DDP) aligner, for a batch whose samples were all skipped: keeps processes in step.
    Its input is made like the aligner's weights (their device and dtype)."""
    return aligner(next(aligner.parameters()).new_zeros(1, 1, in_dim)).sum() * 0.0


def train(config: Config, accelerator: Accelerator | None = None) -> Path:
    """Train until ``max_steps``, resuming from the run's latest checkpoint; returns the run folder."""
    accelerator = accelerator or Accelerator(mixed_precision=config.run.mixed_precision)
    run_dir = config.path(config.run.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = build_task(config, accelerator.device)
    in_dim = task.aligner.in_dim
    optimizer = make_optimizer(task.aligner, config.optim)
    aligner, optimizer = accelerator.prepare(task.aligner, optimizer)
    latest = latest_checkpoint(run_dir)
    if latest:
        state = load_checkpoint(accelerator, latest, accelerator.unwrap_model(aligner), optimizer)
        accelerator.print(f"resuming from {latest} (step {state.step})")
    else:
        state = TrainState()
        torch.manual_seed(config.run.seed + accelerator.process_index)  # dropout in the frozen T5
    log = MetricsLog(run_dir / "metrics.csv", state.step) if accelerator.is_main_process else None
    train_cfg = config.train
    pending = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss x samples, samples, skipped
    started, start_step = time.monotonic(), state.step

    def flush() -> float:
        totals = accelerator.reduce(pending).tolist()  # summed over the processes (Accelerator.reduce's default)
        pending.zero_()
        state.samples += int(totals[1])
        state.skipped += int(totals[2])
        return totals[0] / totals[1] if totals[1] else float("nan")

    batches = StepBatches(task.sizes, task.weights, config.batch_size, config.run.seed, accelerator.process_index,
                          accelerator.num_processes, state.step, config.max_steps)
    loader = DataLoader(task.dataset, batch_sampler=batches, collate_fn=task.collator, num_workers=config.data.num_workers,
                        pin_memory=accelerator.device.type == "cuda", generator=torch.Generator())
    for batch in loader:
        lr = set_learning_rate(optimizer, state.step, config.optim)
        batch = move_batch(batch, accelerator.device)
        with accelerator.autocast():
            loss = task.objective.loss(aligner, batch) if batch["samples"] else _zero_loss(aligner, in_dim)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()  # set_to_none: the default
        state.step += 1
        pending += pending.new_tensor([loss.item() * batch["samples"], batch["samples"], batch["skipped"]])
        at_checkpoint = state.step % train_cfg.checkpoint_every == 0 or state.step == config.max_steps
        if state.step % train_cfg.log_every == 0 or at_checkpoint:
            mean_loss = flush()
            elapsed = time.monotonic() - started
            if log:
                log.append(step=state.step, loss=mean_loss, lr=lr, samples=state.samples, skipped=state.skipped,
                           elapsed_s=round(elapsed, 3))
            eta = elapsed / (state.step - start_step) * (config.max_steps - state.step)
            accelerator.print(f"step {state.step}/{config.max_steps} loss {mean_loss:.4f} lr {lr:.3g} "
                              f"samples {state.samples} skipped {state.skipped} ETA {format_duration(eta)}", flush=True)
        if at_checkpoint:
            save_checkpoint(accelerator, run_dir, accelerator.unwrap_model(aligner), optimizer, state, task.info,
                            train_cfg.keep_checkpoints)
            if log:
                plot_loss(log.path, run_dir / "loss.png", f"{config.run.variant} aligner loss")
    return run_dir
