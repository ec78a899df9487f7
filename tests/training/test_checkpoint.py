"""Checkpoint pieces without pickle: the optimizer state and the RNG states through safetensors + JSON and back."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import load_aligner_weights
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
from training.export import export_aligner
from training.metrics import MetricsLog, plot_loss, read_metrics


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


def test_export_writes_the_latest_or_a_chosen_checkpoint_with_its_provenance(tmp_path: Path):
    run = tmp_path / "run"
    with pytest.raises(ThinkDiffError, match=f"^{re.escape(str(run))} has no checkpoint to export: train first "
                                             r"\(python -m training align\)$"):
        export_aligner(run, tmp_path / "none.safetensors")
    torch.manual_seed(0)
    aligner = Aligner(4, 8, 6)
    optimizer = torch.optim.AdamW(aligner.parameters())
    info = {"variant": "clip", "source_model": "blip2-vision.safetensors", "t5_model": "flan-t5-xxl", "config": {}}
    states = {}
    for step in (3, 5):
        with torch.no_grad():
            aligner.in_proj.weight.add_(step)
        states[step] = {k: v.clone() for k, v in aligner.state_dict().items()}
        save_checkpoint(_Processes(), run, aligner, optimizer, TrainState(step), info, keep=0)
    for chosen, output in ((None, "latest.safetensors"), (run / "checkpoints" / "step-00000003", "step3.safetensors")):
        path = export_aligner(run, tmp_path / output, chosen)
        assert path == tmp_path / output
        weights = load_aligner_weights(path)
        step = 5 if chosen is None else 3
        assert {k: weights.metadata[k] for k in ("variant", "source_model", "t5_model", "training_steps", "trained_with")} == {
            "variant": "clip", "source_model": "blip2-vision.safetensors", "t5_model": "flan-t5-xxl",
            "training_steps": str(step), "trained_with": "ComfyUI-ThinkDiff training/"}
        assert weights.state.keys() == states[step].keys() and all(torch.equal(weights.state[k], states[step][k]) for k in weights.state)


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


def test_the_metrics_log_keeps_the_rows_up_to_the_resumed_step(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, 0)
    assert path.read_bytes() == b"step,loss,lr,samples,skipped,elapsed_s\r\n"  # the csv module's line ends
    for step in (1, 2, 3):
        log.append(step=step, loss=1.0 / step, lr=1e-4, samples=4 * step, skipped=step - 1, elapsed_s=0.5 * step)
    MetricsLog(path, 2)  # resumed from step 2's checkpoint: step 3 is done again
    assert path.read_bytes() == (b"step,loss,lr,samples,skipped,elapsed_s\r\n1,1.0,0.0001,4,0,0.5\r\n"
                                 b"2,0.5,0.0001,8,1,1.0\r\n")
    assert read_metrics(path)[1] == {"step": "2", "loss": "0.5", "lr": "0.0001", "samples": "8", "skipped": "1", "elapsed_s": "1.0"}
    MetricsLog(path, 0)
    assert read_metrics(path) == []
    MetricsLog(tmp_path / "new.csv", 5)  # a checkpoint without a log: a fresh one
    assert read_metrics(tmp_path / "new.csv") == [] and (tmp_path / "new.csv").read_bytes() == b"step,loss,lr,samples,skipped,elapsed_s\r\n"


def _expected_plot(title: str, y_labels: list[tuple[int, str]], x_labels: list[tuple[float, str]], curve) -> Image.Image:
    """The loss plot's layout by hand: 800 x 480, the axes' box from (70, 30) to (780, 430), 4 px ticks, labels beside."""
    image = Image.new("RGB", (800, 480), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([70, 30, 780, 430], outline="black")
    draw.text((70, 8), title, fill="black")
    draw.text((413, 458), "step", fill="black")
    for y, label in y_labels:
        draw.line([66, y, 70, y], fill="black")
        draw.text((4, y - 6), label, fill="black")
    for x, label in x_labels:
        draw.line([x, 430, x, 434], fill="black")
        draw.text((x - 10, 438), label, fill="black")
    curve(draw)
    return image


def test_the_loss_plot_draws_the_finite_losses_against_their_steps(tmp_path: Path):
    csv_path = tmp_path / "metrics.csv"
    log = MetricsLog(csv_path, 0)
    for step, loss in ((10, 3.0), (15, float("nan")), (20, 1.0), (25, float("inf")), (30, 2.0)):
        log.append(step=step, loss=loss, lr=1e-4, samples=1, skipped=0, elapsed_s=1.0)
    with csv_path.open("a") as f:
        f.write("35,,0.0001,1,0,1.0\r\n")  # a flush with no samples
    png = plot_loss(csv_path, tmp_path / "run" / "plots" / "loss.png", "LVLM aligner loss")  # folders made as needed
    assert png == tmp_path / "run" / "plots" / "loss.png"
    # steps 10..30 span x 70..780, losses 1..3 span y 430..30
    expected = _expected_plot("LVLM aligner loss", [(430, "1.000"), (330, "1.500"), (230, "2.000"), (130, "2.500"), (30, "3.000")],
                              [(70, "10"), (247.5, "15"), (425, "20"), (602.5, "25"), (780, "30")],
                              lambda draw: draw.line([(70, 30), (425, 430), (780, 230)], fill=(30, 90, 200), width=2))
    with Image.open(png) as drawn:
        assert drawn.mode == "RGB" and drawn.tobytes() == expected.tobytes()


def test_the_loss_plot_of_one_point_two_and_none(tmp_path: Path):
    csv_path = tmp_path / "metrics.csv"
    MetricsLog(csv_path, 0).append(step=5, loss=2.0, lr=1e-4, samples=1, skipped=0, elapsed_s=1.0)
    # one step: the x axis spans 5..6 and the loss axis 2..2 + 1e-6, so the point sits in the bottom left corner
    low, high = 2.0, 2.0 + 1e-6
    ticks = [low + (high - low) * i / 4 for i in range(5)]  # in floats, a hair off 430 - 100 i: PIL rounds them down
    expected = _expected_plot("training loss", [(430 - (tick - low) / (high - low) * 400, "2.000") for tick in ticks],
                              [(70, "5"), (247.5, "5"), (425, "6"), (602.5, "6"), (780, "6")],
                              lambda draw: draw.ellipse([67, 427, 73, 433], fill=(30, 90, 200)))
    with Image.open(plot_loss(csv_path, tmp_path / "one.png")) as drawn:
        assert drawn.tobytes() == expected.tobytes()
    MetricsLog(csv_path, 0).append(step=4, loss=5.0, lr=1e-4, samples=1, skipped=0, elapsed_s=1.0)
    with csv_path.open("a", newline="") as f:
        f.write("0,1.0,0.0001,1,0,1.0\r\n")  # two points (in any order): a line
    expected = _expected_plot("two", [(430, "1.000"), (330, "2.000"), (230, "3.000"), (130, "4.000"), (30, "5.000")],
                              [(70, "0"), (247.5, "1"), (425, "2"), (602.5, "3"), (780, "4")],
                              lambda draw: draw.line([(780, 30), (70, 430)], fill=(30, 90, 200), width=2))
    with Image.open(plot_loss(csv_path, tmp_path / "two.png", "two")) as drawn:
        assert drawn.tobytes() == expected.tobytes()
    MetricsLog(csv_path, -1)  # no row left
    with Image.open(plot_loss(csv_path, tmp_path / "none.png", "empty")) as drawn:
        assert drawn.tobytes() == _expected_plot("empty", [], [], lambda draw: None).tobytes()
