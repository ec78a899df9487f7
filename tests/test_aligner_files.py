"""Our aligner format, release checkpoints, the converter CLI and every bad file."""

import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.support.tiny_models import random_aligner
from thinkdiff.__main__ import main as cli
from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import (
    RELEASE_KEYS,
    AlignerWeights,
    convert_release_checkpoint,
    load_aligner_weights,
    save_aligner_weights,
)
from thinkdiff.errors import ThinkDiffError

OURS_TO_RELEASE = {ours: release for release, ours in RELEASE_KEYS.items()}


def release_state(aligner: Aligner, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + OURS_TO_RELEASE[k]: v.clone() for k, v in aligner.state_dict().items()}


class RunsCodeWhenUnpickled:
    """A pickled object whose loading would create a file: proves that no code from the file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def aligner() -> Aligner:
    return random_aligner(in_dim=40, hidden_dim=24, out_dim=16, seed=1)


def assert_same_weights(weights: AlignerWeights, aligner: Aligner) -> None:
    for key, value in aligner.state_dict().items():
        torch.testing.assert_close(weights.state[key], value)


@pytest.mark.parametrize("layout", ["release", "module_prefix", "bare"])
def test_release_checkpoint_loads_with_weights_only(tmp_path, aligner, layout):
    state = release_state(aligner, "module." if layout == "module_prefix" else "")
    checkpoint = state if layout == "bare" else {"model": state, "epoch": 4, "scaler": None}
    torch.save(checkpoint, tmp_path / "thinkdiff_lvlm.pth")
    weights = load_aligner_weights(tmp_path / "thinkdiff_lvlm.pth")
    assert_same_weights(weights, aligner)
    assert (weights.in_dim, weights.hidden_dim, weights.out_dim) == (40, 24, 16)


def test_conversion_round_trip(tmp_path, aligner):
    torch.save({"model": release_state(aligner), "epoch": 4}, tmp_path / "release.pth")
    assert cli(["convert-aligner", str(tmp_path / "release.pth"), str(tmp_path / "ours.safetensors"), "--variant", "lvlm"]) == 0
    weights = load_aligner_weights(tmp_path / "ours.safetensors")
    assert_same_weights(weights, aligner)
    assert weights.metadata["format"] == "thinkdiff.aligner"
    assert weights.metadata["variant"] == "lvlm"
    assert (weights.metadata["input_dim"], weights.metadata["output_dim"]) == ("40", "16")
    assert weights.metadata["converted_from"] == "release.pth"
    with safe_open(str(tmp_path / "ours.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == sorted(RELEASE_KEYS.values())
    x = torch.randn(3, 40)
    torch.testing.assert_close(Aligner.from_state_dict(weights.state)(x), aligner(x))


def test_pickled_objects_are_refused_and_the_converter_runs_no_code(tmp_path, aligner):
    marker = tmp_path / "code-ran"
    checkpoint = {"model": release_state(aligner), "config": RunsCodeWhenUnpickled(marker), "epoch": 2}
    torch.save(checkpoint, tmp_path / "thinkdiff_lvlm.pth")
    with pytest.raises(ThinkDiffError, match="convert-aligner"):
        load_aligner_weights(tmp_path / "thinkdiff_lvlm.pth")
    assert not marker.exists()
    weights = convert_release_checkpoint(tmp_path / "thinkdiff_lvlm.pth", tmp_path / "out.safetensors")
    assert not marker.exists(), "the converter executed code from the checkpoint"
    assert_same_weights(weights, aligner)
    assert_same_weights(load_aligner_weights(tmp_path / "out.safetensors"), aligner)


def test_real_widths_are_recognised(tmp_path):
    weights = AlignerWeights(random_aligner(in_dim=1408, hidden_dim=8, out_dim=8).state_dict())
    path = save_aligner_weights(weights, tmp_path / "clip.safetensors")
    loaded = load_aligner_weights(path)
    assert loaded.variant == "clip" and "blip2" in loaded.metadata["source_model"]


def test_missing_keys(tmp_path, aligner):
    state = release_state(aligner)
    del state["mm_projector.3.weight"]
    torch.save({"model": state}, tmp_path / "partial.pth")
    with pytest.raises(ThinkDiffError, match=r"missing norm\.weight"):
        load_aligner_weights(tmp_path / "partial.pth")


def test_inconsistent_shapes(tmp_path, aligner):
    state = release_state(aligner)
    state["mm_projector.2.weight"] = torch.zeros(16, 7)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ThinkDiffError, match="inconsistent aligner shapes"):
        load_aligner_weights(tmp_path / "bad.pth")


@pytest.mark.parametrize("name", ["broken.safetensors", "broken.pth"])
def test_corrupt_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ThinkDiffError, match="download it again"):
        load_aligner_weights(tmp_path / name)


def test_truncated_safetensors(tmp_path, aligner):
    path = save_aligner_weights(AlignerWeights(aligner.state_dict()), tmp_path / "a.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ThinkDiffError, match="download it again"):
        load_aligner_weights(path)


def test_missing_file(tmp_path):
    with pytest.raises(ThinkDiffError, match="not found"):
        load_aligner_weights(tmp_path / "nope.safetensors")


def test_not_an_aligner(tmp_path):
    torch.save({"model": {"something.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ThinkDiffError, match="not a ThinkDiff aligner"):
        load_aligner_weights(tmp_path / "other.pth")


def test_cli_reports_errors(tmp_path, capsys):
    assert cli(["inspect-aligner", str(tmp_path / "missing.safetensors")]) == 1
    assert "not found" in capsys.readouterr().err


def test_cli_inspect(tmp_path, aligner, capsys):
    path = save_aligner_weights(AlignerWeights(aligner.state_dict()), tmp_path / "a.safetensors", source_model="x")
    assert cli(["inspect-aligner", str(path)]) == 0
    out = capsys.readouterr().out
    assert "40 -> 24 -> 16" in out and "source_model: x" in out


def test_pickle_module_is_not_used_for_safe_files(tmp_path, aligner, monkeypatch):
    """Release files that hold only tensors load through torch's weights_only unpickler, never plain pickle."""
    torch.save({"model": release_state(aligner)}, tmp_path / "ok.pth")
    monkeypatch.setattr(pickle, "Unpickler", None)
    assert_same_weights(load_aligner_weights(tmp_path / "ok.pth"), aligner)
