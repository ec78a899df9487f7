"""The training loop on a stand-in task (a tiny aligner fitting a squared error, no T5): what it logs, prints, saves and
draws, against values worked out here from the run's batches, the objective's own losses and a stepped clock."""

from __future__ import annotations

import csv
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import Dataset, get_worker_info

from thinkdiff.aligner import Aligner
from thinkdiff.progress import format_duration
from training import trainer
from training.batching import StepBatches
from training.checkpoint import list_checkpoints, read_checkpoint
from training.metrics import plot_loss

ROWS = torch.randn(6, 3, generator=torch.Generator().manual_seed(3))
SEED = 5


class Examples(Dataset):
    """Sample ``index`` is ``(index, ROWS[index])``; the indices in ``bad`` are unreadable (``None``: skipped)."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return len(ROWS)

    def __getitem__(self, ref: tuple[int, int]):
        _, index = ref
        return None if index in self.bad else (index, ROWS[index])


def collate(examples: list) -> dict:
    kept = [e for e in examples if e is not None]
    batch = {"samples": len(kept), "skipped": len(examples) - len(kept), "in_worker": get_worker_info() is not None}
    if kept:
        batch["index"] = [index for index, _ in kept]
        batch["features"] = torch.stack([row for _, row in kept])
    return batch


class Objective:
    """A squared error to 1; records each step's samples, loss, worker flag and one draw from the global RNG (as T5's
    dropout would draw)."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def loss(self, aligner: torch.nn.Module, batch: dict) -> torch.Tensor:
        loss = (aligner(batch["features"]) - 1.0).pow(2).mean()
        self.steps.append({"index": batch["index"], "loss": loss.item(), "draw": torch.rand(()).item(),
                           "in_worker": batch["in_worker"]})
        return loss


def stand_in(monkeypatch: pytest.MonkeyPatch, bad: set[int]) -> list[Objective]:
    """Every run's task (``build_task``) becomes the stand-in; returns the objectives of the runs, in order."""
    objectives: list[Objective] = []

    def build_task(config, device):
        objectives.append(Objective())
        aligner = Aligner(3, 4, 2)
        return trainer.Task(Examples(bad), [len(ROWS)], [1.0], collate, objectives[-1], aligner,
                            {"variant": "lvlm", "source_model": "stand-in", "t5_model": "none"})

    monkeypatch.setattr(trainer, "build_task", build_task)
    return objectives


class Clock:
    """``time.monotonic`` stepping through ``times``."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def monotonic(self) -> float:
        return self.times.pop(0)


class Stdout:
    """Records what is written and when it is flushed."""

    def __init__(self) -> None:
        self.events: list[str | None] = []  # None: a flush

    def write(self, text: str) -> int:
        self.events.append(text)
        return len(text)

    def flush(self) -> None:
        self.events.append(None)


def printed_lines(stdout: Stdout) -> list[str]:
    """The printed lines, each asserted to be flushed as soon as it ends."""
    lines, current = [], ""
    for event, following in zip(stdout.events, stdout.events[1:] + [""], strict=True):
        if event is None:
            continue
        current += event
        if current.endswith("\n"):
            assert following is None, f"{current!r} not flushed"
            lines.append(current[:-1])
            current = ""
    return lines


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def sample_weighted_mean(steps: list[tuple[float, int]]) -> float:
    """The loss over samples of steps ``(mean loss, samples)``, in float64 as the run sums them; NaN without samples."""
    total, samples = 0.0, 0
    for loss, count in steps:
        total, samples = total + loss * count, samples + count
    return total / samples if samples else math.nan


def test_a_run_logs_prints_and_saves_what_its_steps_computed(run_config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Four steps (rows at 2, 3 and 4: log_every 2, checkpoint_every 3, the last step), then resumed to step 8 (rows at
    6 and 8). Step 2 has one unreadable sample and step 3 only unreadable ones (a NaN row, a zero loss)."""
    order = [[index for _, index in refs] for refs in StepBatches([6], [1.0], 2, SEED, 0, 1, 0, 8)]
    bad = {order[1][0], *order[2]}
    objectives = stand_in(monkeypatch, bad)
    settings = (f"run.seed={SEED}", "train.batch_size=2", "train.log_every=2", "train.checkpoint_every=3",
                "train.keep_checkpoints=1", "data.num_workers=1")
    config = run_config(*settings, "train.max_steps=4")
    started, times = 1000.0, (1075.43219, 1150.9876, 1290.5, 1400.0, 2000.25, 2150.125)
    monkeypatch.setattr(trainer, "time", Clock(started, *times[:3]))
    stdout = Stdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = trainer.train(config)
    assert not [w for w in caught if "pin_memory" in str(w.message)]  # pinned memory only for a GPU

    steps = objectives[0].steps
    used = [[index for index in batch if index not in bad] for batch in order]
    assert [step["index"] for step in steps] == [used[0], used[1], used[3]]  # step 3 had no samples: no objective call
    assert all(step["in_worker"] for step in steps)  # loaded in the DataLoader's worker
    torch.manual_seed(SEED)  # the run seed: the DataLoader's own generator leaves the global RNG to the objective
    assert [step["draw"] for step in steps] == [torch.rand(()).item() for _ in steps]
    losses = {1: (steps[0]["loss"], 2), 2: (steps[1]["loss"], 1), 4: (steps[2]["loss"], len(used[3]))}
    means = [sample_weighted_mean([losses[1], losses[2]]), math.nan, sample_weighted_mean([losses[4]])]
    samples = [3, 3, 3 + len(used[3])]
    skipped = [1, 3, 3 + 2 - len(used[3])]
    elapsed = [round(t - started, 3) for t in times[:3]]
    assert elapsed == [75.432, 150.988, 290.5]
    logged = rows(run)
    assert [row["step"] for row in logged] == ["2", "3", "4"]
    assert float(logged[0]["loss"]) == means[0]  # the float64 sums, exactly
    assert logged[1]["loss"] == "nan" and float(logged[2]["loss"]) == means[2]
    assert [(float(r["lr"]), int(r["samples"]), int(r["skipped"]), float(r["elapsed_s"])) for r in logged] == [
        (1e-3, samples[n], skipped[n], elapsed[n]) for n in range(3)]
    etas = [format_duration((times[n] - started) / step * (4 - step)) for n, step in enumerate((2, 3, 4))]
    assert etas == ["1m15s", "0m50s", "0m00s"]
    assert printed_lines(stdout) == [
        f"step {step}/4 loss {means[n]:.4f} lr 0.001 samples {samples[n]} skipped {skipped[n]} ETA {etas[n]}"
        for n, step in enumerate((2, 3, 4))]
    assert [p.name for p in list_checkpoints(run)] == ["step-00000004"]  # step 3's, then 4's, keeping 1
    _, record = read_checkpoint(run / "checkpoints" / "step-00000004")
    assert record["train"] == {"step": 4, "samples": samples[2], "skipped": skipped[2]}
    assert (record["variant"], record["source_model"], record["t5_model"]) == ("lvlm", "stand-in", "none")
    expected = plot_loss(run / "metrics.csv", tmp_path / "expected.png", "lvlm aligner loss")
    assert (run / "loss.png").read_bytes() == expected.read_bytes()  # drawn after the last row, titled by the variant

    monkeypatch.setattr(trainer, "time", Clock(started, *times[3:]))
    stdout.events.clear()
    resumed = trainer.train(run_config(*settings, "train.max_steps=8"))
    assert resumed == run
    steps = objectives[1].steps
    assert [step["index"] for step in steps] == [batch for batch in used[4:] if batch]  # steps 5 to 8
    assert [row["step"] for row in rows(run)] == ["2", "3", "4", "6", "8"]  # the log goes on
    lines = printed_lines(stdout)
    assert lines[0] == f"resuming from {run / 'checkpoints' / 'step-00000004'} (step 4)"
    assert [line.split(" ETA ")[1] for line in lines[1:]] == [format_duration((1400.0 - started) / 2 * 2), "0m00s"]
    assert [p.name for p in list_checkpoints(run)] == ["step-00000008"]


class SecondProcess:
    """A single-process Accelerator posing as process 1 of 2 whose partner counted the same: ``reduce`` sums two copies
    (Accelerator.reduce's default); only the main process prints."""

    process_index, num_processes, is_main_process = 1, 2, False

    def __init__(self) -> None:
        self.accelerator = Accelerator(mixed_precision="no")

    def __getattr__(self, name: str):
        return getattr(self.accelerator, name)

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.stack([tensor, tensor]).sum(0)

    def print(self, *args, **kwargs) -> None:
        pass


def test_a_second_process_takes_its_slices_and_dropout_seed_and_counts_both(run_config, monkeypatch: pytest.MonkeyPatch):
    objectives = stand_in(monkeypatch, bad={0})
    saved = []
    monkeypatch.setattr(trainer, "save_checkpoint", lambda accelerator, run_dir, aligner, optimizer, state, info, keep:
                        saved.append((state.step, state.samples, state.skipped)))
    run = trainer.train(run_config(f"run.seed={SEED}", "train.batch_size=2", "train.max_steps=3", "train.log_every=3",
                                   "data.num_workers=0"), SecondProcess())
    mine = [[index for _, index in refs if index != 0] for refs in StepBatches([6], [1.0], 2, SEED, 1, 2, 0, 3)]
    steps = objectives[0].steps
    assert [step["index"] for step in steps] == mine
    torch.manual_seed(SEED + 1)  # the run seed plus the process index
    assert [step["draw"] for step in steps] == [torch.rand(()).item() for _ in steps]
    counted = sum(len(batch) for batch in mine)
    assert saved == [(3, 2 * counted, 2 * (6 - counted))]  # both processes' counts
    assert not (run / "metrics.csv").exists() and not (run / "loss.png").exists()  # the main process's
