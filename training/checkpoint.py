"""Checkpoints that let a run continue exactly, without pickle.

``checkpoints/step-NNNNNNNN/`` holds ``aligner.safetensors``, ``optimizer.safetensors`` (AdamW moments),
``state.json`` (step, data position, counters, optimizer hyper-parameters, the run's config and the
aligner's provenance) and ``rng-RANK.safetensors`` per process (torch CPU/CUDA generator states; Python's
``random`` state in its metadata). The learning rate is a function of the step and data order/masking
are seeded per sample, so these files are the whole state. A checkpoint is written under a
``.partial`` name and renamed when complete; the output folder must be shared by all nodes.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from thinkdiff.errors import ThinkDiffError
from thinkdiff.safetensors_header import check_complete

PREFIX = "step-"
PARTIAL = ".partial"
ALIGNER_FILE = "aligner.safetensors"
STATE_FILE = "state.json"


@dataclass
class TrainState:
    step: int = 0  # also the data position (training/batching.py)
    samples: int = 0  # samples trained on, all processes
    skipped: int = 0  # bad samples skipped, all processes


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    folder = checkpoints_dir(run_dir)
    found = [p for p in folder.glob(f"{PREFIX}*") if p.is_dir() and not p.name.endswith(PARTIAL)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _optimizer_to_files(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in meta["scalars"].items()}
    for key, value in tensors.items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _save_rng(path: Path) -> None:
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(path), metadata={"python": json.dumps(random.getstate())})


def _load_rng(path: Path) -> None:
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    with safe_open(str(path), framework="pt") as f:
        version, internal, gauss = json.loads(f.metadata()["python"])
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(accelerator: Any, run_dir: Path, aligner: nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainState, info: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint from every process (collective: all processes must call it)."""
    final = checkpoints_dir(run_dir) / f"{PREFIX}{state.step:08d}"
    partial = final.with_name(final.name + PARTIAL)
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    _save_rng(partial / f"rng-{accelerator.process_index}.safetensors")
    if accelerator.is_main_process:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in aligner.state_dict().items()}, str(partial / ALIGNER_FILE))
        tensors, meta = _optimizer_to_files(optimizer.state_dict())
        save_file(tensors, str(partial / "optimizer.safetensors"))
        record = {"train": dataclasses.asdict(state), "optimizer": meta, **info, "num_processes": accelerator.num_processes}
        (partial / STATE_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _damaged(path: Path) -> str:
    return f"delete {path} to resume from the previous checkpoint (or from the start if it was the only one)"


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The aligner weights and ``state.json`` of a checkpoint, after checking that its files are whole."""
    if not (path / STATE_FILE).is_file():
        raise ThinkDiffError(f"{path} is not a finished training checkpoint (no {STATE_FILE})")
    for tensors in sorted(path.glob("*.safetensors")):
        check_complete(tensors, _damaged(path))
    try:
        record = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ThinkDiffError(f"{path / STATE_FILE} is damaged ({e}): {_damaged(path)}") from e
    return load_file(str(path / ALIGNER_FILE)), record


def load_checkpoint(accelerator: Any, path: Path, aligner: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """Restore weights, optimizer, RNG and data position; the process count must be unchanged."""
    weights, record = read_checkpoint(path)
    if record["num_processes"] != accelerator.num_processes:
        raise ThinkDiffError(f"{path} was written by {record['num_processes']} processes, this run has "
                             f"{accelerator.num_processes}: the data position would not match. Resume with the same launch.")
    aligner.load_state_dict(weights)
    optimizer.load_state_dict(_optimizer_from_files(load_file(str(path / "optimizer.safetensors")), record["optimizer"]))
    _load_rng(path / f"rng-{accelerator.process_index}.safetensors")
    known = {field.name for field in dataclasses.fields(TrainState)}
    return TrainState(**{k: v for k, v in record["train"].items() if k in known})  # 0.1.0 also stored epoch positions
