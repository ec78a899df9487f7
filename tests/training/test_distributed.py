"""The multi-process path (DDP, sharded stage A) with two real processes on the CPU (gloo), as torchrun launches them.

On GPUs ``accelerate launch --multi_gpu`` starts the same processes; on the CPU Accelerate needs ``ACCELERATE_USE_CPU``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from tests.support.paths import REPO
from tests.training.conftest import tiny_run_config, tiny_run_overrides
from tests.training.test_align import clip_settings
from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import load_aligner_weights
from training.batching import StepBatches
from training.config import load_config
from training.feature_store import finished_shards
from training.optim import make_optimizer, set_learning_rate
from training.precompute import precompute
from training.trainer import build_task


def launch_two(command: str, output: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m training COMMAND`` in two processes on this machine."""
    sets = [arg for override in tiny_run_overrides(output, *overrides) for arg in ("--set", override)]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "training", command, *sets],
        cwd=REPO, env={**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_apart(command: str, output: Path, *overrides: str) -> list[subprocess.CompletedProcess]:
    """``python -m training COMMAND`` as two independent processes, as SLURM's srun starts them: no launcher watches
    them, so one that fails does not stop the other. A hang past the timeout fails the test."""
    sets = [arg for override in tiny_run_overrides(output, *overrides) for arg in ("--set", override)]
    port = str(free_port())
    processes = [subprocess.Popen([sys.executable, "-m", "training", command, *sets], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "RANK": str(rank),
                                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
                 for rank in range(2)]
    try:
        return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in processes]
    finally:
        for p in processes:
            p.kill()


@pytest.mark.parametrize("backend", ["transformers", pytest.param("vllm", marks=pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM's preparation runs where vLLM is installed"))])
def test_a_manifest_error_on_process_0_ends_both_processes_with_its_message(tmp_path: Path, stage_a_settings, backend):
    """Process 0 alone checks the folder's manifest; process 1 must not wait for it at a barrier (until the gloo/NCCL
    timeout) but end at once with process 0's message. No engine starts and nothing is written."""
    folder = tmp_path / "features"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"seed": 12345}))
    results = launch_apart("precompute", tmp_path / "run", *stage_a_settings(folder), f'precompute.backend="{backend}"')
    for result in results:
        assert result.returncode == 1, result.stderr[-3000:]
        assert "process 0: " in result.stderr and "other settings" in result.stderr and "seed" in result.stderr
    assert os.listdir(folder) == ["manifest.json"]


def test_two_process_precompute_writes_the_same_shards(tmp_path: Path, stage_a_settings):
    """Process r takes shards r, r+2, ...; every shard holds the single-process run's tokens, texts and features. Both
    runs use one thread per process: float sums, and so the sampled tokens, depend on how a matmul is split."""
    folder, single = tmp_path / "features", tmp_path / "single"
    launch_two("precompute", tmp_path / "run", *stage_a_settings(folder))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        precompute(tiny_run_config(tmp_path / "single-run", *stage_a_settings(single)))
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(reset_partial_state=True)
    assert finished_shards(folder) == finished_shards(single) == [0, 1, 2, 3]
    for shard in finished_shards(single):
        name = f"shard-{shard:06d}"
        ours, theirs = load_file(str(folder / f"{name}.safetensors")), load_file(str(single / f"{name}.safetensors"))
        assert torch.equal(ours["token_ids"], theirs["token_ids"]) and torch.equal(ours["offsets"], theirs["offsets"])
        # the same computation, but each process has one thread here: bf16 rounding may differ by an ulp
        torch.testing.assert_close(ours["features"].float(), theirs["features"].float(), rtol=1e-2, atol=1e-2)
        assert (folder / f"{name}.json").read_text() == (single / f"{name}.json").read_text()


def test_two_process_clip_alignment(tmp_path: Path, t5_folder: Path, vision_file: Path, photo_set: Path):
    """DDP: each step consumes both processes' batches, one process writes the log, the export loads."""
    run = tmp_path / "run"
    launch_two("align", run, *clip_settings(t5_folder, vision_file, photo_set, "train.batch_size=3", "train.max_steps=4",
                                            "train.checkpoint_every=2"))
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["samples"]) + int(r["skipped"]) for r in rows] == [6, 12, 18, 24]  # 2 processes x batch 3 per step
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    launch_two("export", run, *clip_settings(t5_folder, vision_file, photo_set))
    weights = load_aligner_weights(run / "aligner.safetensors")
    assert weights.metadata["training_steps"] == "4"
    assert Aligner.from_state_dict(weights.state)(torch.randn(65, weights.in_dim)).shape == (65, weights.out_dim)


def test_two_processes_train_as_one_process_averaging_their_halves(tmp_path: Path, t5_folder: Path, vision_file: Path,
                                                                   photo_set: Path):
    """DDP is exact: 2 processes x batch 3 end with the weights of one process that, each step, averages the losses of the
    two halves of the global batch of 6 (process r's half = StepBatches(rank=r)). Deterministic: no dropout, fp32."""
    settings = clip_settings(t5_folder, vision_file, photo_set, "train.batch_size=3", "train.max_steps=3",
                             "train.checkpoint_every=3", "model.t5_dropout=false")
    run = tmp_path / "ddp"
    launch_two("align", run, *settings)
    ddp = load_file(str(run / "checkpoints" / "step-00000003" / "aligner.safetensors"))

    config = load_config(None, tiny_run_overrides(tmp_path / "single", *settings))
    task = build_task(config, torch.device("cpu"))
    optimizer = make_optimizer(task.aligner, config.optim)
    halves = [iter(StepBatches(task.sizes, task.weights, 3, config.run.seed, rank, 2, 0, 3)) for rank in (0, 1)]
    for step in range(3):
        set_learning_rate(optimizer, step, config.optim)
        losses = []
        for half in halves:
            batch = task.collator([task.dataset[ref] for ref in next(half)])
            losses.append(task.objective.loss(task.aligner, batch) if batch["samples"] else torch.zeros(()))
        (sum(losses) / 2).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    for key, value in task.aligner.state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-7, msg=key)
