"""Damaged training files (an interrupted copy, a crash mid-write) name the file and the fix instead of a raw library error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.training.test_align import lvlm_settings
from thinkdiff.errors import ThinkDiffError
from training.config import Config
from training.feature_store import FeatureShards
from training.models import frozen_t5_from_config
from training.trainer import train


def truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_feature_shard_names_how_to_redo_it(tmp_path: Path, lvlm_features: Config):
    folder = tmp_path / "features"
    shutil.copytree(lvlm_features.path(lvlm_features.precompute.features_dir), folder)
    truncate(folder / "shard-000002.safetensors", 1000)
    with pytest.raises(ThinkDiffError, match=r"shard-000002.safetensors is truncated .*delete shard-000002.json and "
                                             r"shard-000002.safetensors .*rerun `python -m training precompute`"):
        FeatureShards(folder)


@pytest.mark.parametrize("damage", ["missing tensors", "cut json", "not utf-8"])
def test_a_damaged_shard_names_how_to_redo_it(tmp_path: Path, lvlm_features: Config, damage: str):
    folder = tmp_path / "features"
    shutil.copytree(lvlm_features.path(lvlm_features.precompute.features_dir), folder)
    if damage == "missing tensors":
        (folder / "shard-000001.safetensors").unlink()
        problem = "shard-000001.safetensors is missing"
    else:
        (folder / "shard-000001.json").write_bytes(b'{"samples": [' if damage == "cut json" else b'{"samples": "\xff"}')
        problem = r"shard-000001.json is damaged \(.+\)"
    with pytest.raises(ThinkDiffError, match=f"^{problem}: delete shard-000001.json and shard-000001.safetensors in "
                                             f"{re.escape(str(folder))} and rerun `python -m training precompute` to redo "
                                             "that shard$"):
        FeatureShards(folder)


def test_a_damaged_checkpoint_names_the_folder_to_delete(run_config, t5_folder: Path, lvlm_features: Config):
    features = lvlm_features.path(lvlm_features.precompute.features_dir)
    settings = lvlm_settings(t5_folder, features, "train.batch_size=2", "train.checkpoint_every=2")
    run_dir = train(run_config(*settings, "train.max_steps=2"))
    truncate(run_dir / "checkpoints" / "step-00000002" / "optimizer.safetensors")
    with pytest.raises(ThinkDiffError, match=r"step-00000002/optimizer.safetensors is truncated.*delete .*step-00000002 to resume "
                                             r"from the previous checkpoint"):
        train(run_config(*settings, "train.max_steps=4"))


def test_a_truncated_t5_names_its_file(tmp_path: Path, run_config, t5_folder: Path):
    folder = tmp_path / "flan-t5"
    shutil.copytree(t5_folder, folder)
    truncate(folder / "model.safetensors", 5000)
    with pytest.raises(ThinkDiffError, match=r"model.safetensors is truncated .*download model.safetensors of "
                                             r"https://huggingface.co/google/flan-t5-xxl again"):
        frozen_t5_from_config(run_config(f'model.t5="{folder}"'))
