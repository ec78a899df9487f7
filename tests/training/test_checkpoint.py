"""Checkpoint pieces without pickle: the optimizer state and the RNG states through safetensors + JSON and back."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from thinkdiff.errors import ThinkDiffError
from training.checkpoint import (
    STATE_FILE,
    TrainState,
    _load_rng,
    _optimizer_from_files,
    _optimizer_to_files,
    _save_rng,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


def _assert_same(restored, original):
    assert restored.keys() == original.keys()
    for key, value in original.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(restored[key], value), key
        elif isinstance(value, dict):
            _assert_same(restored[key], value)
        else:
            assert restored[key] == value and type(restored[key]) is type(value), key


def test_optimizer_state_survives_its_files(tmp_path: Path):
    """AdamW after a step (betas come back a tuple) and a group without betas; also a scalar state entry and a state
    name with a dot, which the files must carry too."""
    weights, bias = torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(3))
    optimizer = torch.optim.AdamW([{"params": [weights]}, {"params": [bias], "weight_decay": 0.0}], lr=1e-3, betas=(0.8, 0.95))
    (weights.sum() + bias.square().sum()).backward()
    optimizer.step()
    state = optimizer.state_dict()
    del state["param_groups"][1]["betas"]  # as an SGD-like group would be
    state["state"][1]["count.total"] = 7
    state["state"][0]["moment.extra"] = torch.arange(3.0)
    tensors, meta = _optimizer_to_files(state)
    save_file(tensors, str(tmp_path / "optimizer.safetensors"))
    restored = _optimizer_from_files(load_file(str(tmp_path / "optimizer.safetensors")), json.loads(json.dumps(meta)))
    _assert_same(restored["state"], state["state"])
    assert restored["param_groups"] == state["param_groups"]
    assert type(restored["param_groups"][0]["betas"]) is tuple and "betas" not in restored["param_groups"][1]


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    """Two CUDA generators on a machine without CUDA: their states as a GPU run would save and restore them."""
    devices = {"available": True, "states": [torch.arange(4, dtype=torch.uint8), torch.arange(4, 8, dtype=torch.uint8)],
               "restored": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: devices["available"])
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(devices["states"]))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: devices["restored"].append(list(states)))
    return devices


def test_rng_states_survive_their_file(tmp_path: Path, fake_cuda):
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    try:
        _save_rng(tmp_path / "rng-0.safetensors")
        expected = torch.rand(3), random.random()
        torch.manual_seed(123)
        random.seed(123)
        _load_rng(tmp_path / "rng-0.safetensors")
        assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
        assert len(fake_cuda["restored"]) == 1
        assert [s.tolist() for s in fake_cuda["restored"][0]] == [s.tolist() for s in fake_cuda["states"]]
        fake_cuda["available"] = False  # a GPU run resumed on a machine without CUDA: its CUDA states are left alone
        _load_rng(tmp_path / "rng-0.safetensors")
        assert len(fake_cuda["restored"]) == 1
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)


class _Processes:
    """What save/load_checkpoint ask of an Accelerator: process 0 of ``num_processes``."""

    is_main_process, process_index = True, 0

    def __init__(self, num_processes: int = 1):
        self.num_processes = num_processes

    def wait_for_everyone(self):
        pass


def test_checkpoints_save_load_and_keep_the_newest(tmp_path: Path, ascii_locale):
    torch.manual_seed(0)
    aligner = torch.nn.Linear(2, 3)
    optimizer = torch.optim.AdamW(aligner.parameters(), lr=1e-3)
    assert list_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    folder = tmp_path / "checkpoints"
    for step in (8, 9, 10):
        aligner(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        if step == 9:  # an interrupted write of this step, and a finished one (both replaced)
            for stale in (folder / "step-00000009.partial", folder / "step-00000009"):
                stale.mkdir()
                (stale / "stale").write_text("x")
        path = save_checkpoint(_Processes(), tmp_path, aligner, optimizer, TrainState(step, 4 * step, 1), {"note": "Décris"},
                               keep=2)
        assert path == folder / f"step-{step:08d}"
    assert list_checkpoints(tmp_path) == [folder / "step-00000009", path]  # step 8 pruned
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000009", "step-00000010"]
    assert not (folder / "step-00000009" / "stale").exists()
    weights, record = read_checkpoint(path)
    assert record["train"] == {"step": 10, "samples": 40, "skipped": 1} and record["note"] == "Décris"
    assert record["num_processes"] == 1 and torch.equal(weights["weight"], aligner.weight.detach())

    expected_state, expected_weight = optimizer.state_dict(), aligner.weight.detach().clone()
    fresh = torch.nn.Linear(2, 3)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    assert load_checkpoint(_Processes(), path, fresh, fresh_optimizer) == TrainState(10, 40, 1)
    assert torch.equal(fresh.weight, expected_weight)
    _assert_same(fresh_optimizer.state_dict()["state"], expected_state["state"])
    with pytest.raises(ThinkDiffError, match=r"written by 1 processes, this run has 2: the data position would not match"):
        load_checkpoint(_Processes(2), path, fresh, fresh_optimizer)

    save_checkpoint(_Processes(), tmp_path, aligner, optimizer, TrainState(11), {}, keep=0)  # keep 0: keep them all
    assert len(list_checkpoints(tmp_path)) == 3 and latest_checkpoint(tmp_path) == folder / "step-00000011"
    save_checkpoint(_Processes(), tmp_path, aligner, optimizer, TrainState(12), {}, keep=1)
    assert list_checkpoints(tmp_path) == [folder / "step-00000012"]
    (folder / "step-99999999").mkdir()
    (folder / "step-100000000").mkdir()  # past 8 digits: by number, not by name
    (folder / "step-100000001.partial").mkdir()  # an interrupted write: never a checkpoint
    assert latest_checkpoint(tmp_path) == folder / "step-100000000"
    with pytest.raises(ThinkDiffError, match=r"step-100000001.partial is not a finished training checkpoint \(no state.json\)"):
        read_checkpoint(folder / "step-100000001.partial")


def test_a_checkpoint_whose_old_ones_cannot_be_deleted_is_still_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Pruning is best effort (a busy file on a network share): the run goes on."""
    aligner = torch.nn.Linear(2, 3)
    optimizer = torch.optim.AdamW(aligner.parameters())
    save_checkpoint(_Processes(), tmp_path, aligner, optimizer, TrainState(1), {}, keep=1)
    real_rmtree = shutil.rmtree

    def busy(path, ignore_errors=False):
        if Path(path).name == "step-00000001" and not ignore_errors:
            raise OSError(16, "Device or resource busy", str(path))
        return real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(shutil, "rmtree", busy)
    assert save_checkpoint(_Processes(), tmp_path, aligner, optimizer, TrainState(2), {}, keep=1).is_dir()


def test_damaged_checkpoint_files_name_the_folder_to_delete(tmp_path: Path):
    aligner = torch.nn.Linear(2, 3)
    optimizer = torch.optim.AdamW(aligner.parameters())
    path = save_checkpoint(_Processes(), tmp_path, aligner, optimizer, TrainState(1), {}, keep=1)
    advice = f"delete {re.escape(str(path))} to resume from the previous checkpoint \\(or from the start if it was the only one\\)"
    state = (path / STATE_FILE).read_bytes()
    (path / STATE_FILE).write_bytes(b'{"train": ')
    with pytest.raises(ThinkDiffError, match=f"^{re.escape(str(path / STATE_FILE))} is damaged \\(.+\\): {advice}$"):
        read_checkpoint(path)
    (path / STATE_FILE).write_bytes(state)
    data = (path / "optimizer.safetensors").read_bytes()
    (path / "optimizer.safetensors").write_bytes(data[:-4])  # the aligner file itself is whole: every file is checked
    optimizer_file = re.escape(str(path / "optimizer.safetensors"))
    with pytest.raises(ThinkDiffError, match=f"^{optimizer_file} is truncated .+{advice}\\.$"):
        read_checkpoint(path)
