"""Stage A: stored features are the library's encode output; shards are resumable and reproducible."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from thinkdiff.errors import ThinkDiffError
from thinkdiff.vlm import VLMRequest
from training.config import Config
from training.feature_store import FeatureShards, finished_shards
from training.pairs import pairs_from_config
from training.precompute import precompute
from training.stage_a_plan import ReadyImages, instruction_for, sampling_options


def features_dir(config: Config) -> Path:
    return config.path(config.precompute.features_dir)


def test_shards_hold_every_usable_image_and_count_the_unreadable(lvlm_features: Config):
    folder = features_dir(lvlm_features)
    assert finished_shards(folder) == [0, 1, 2, 3]
    records = [json.loads((folder / f"shard-{i:06d}.json").read_text()) for i in range(4)]
    assert [len(r["samples"]) for r in records] == [5, 5, 4, 1]  # entry 14 (broken.png) is skipped
    assert sum(r["skipped"] for r in records) == 1
    shards = FeatureShards(folder)
    assert len(shards) == 15 and shards.skipped_inputs == 1
    features, ids = shards[0]
    assert features.dtype == torch.bfloat16 and features.shape == (len(ids), 64) and 1 <= len(ids) <= 6
    assert all(r["instruction"] in lvlm_features.precompute.instructions for rec in records for r in rec["samples"])


def test_features_equal_the_library_encode_output(lvlm_features: Config, encoder):
    pre, seed = lvlm_features.precompute, lvlm_features.run.seed
    ready = ReadyImages(pairs_from_config(lvlm_features, require_caption=False), pre.min_pixels, pre.max_pixels)
    first_batch = [ready[i][1] for i in range(3)]  # shard 0, batch 0
    requests = [VLMRequest(instruction_for(pre.instructions, seed, i), [pair.image]) for i, pair in enumerate(first_batch)]
    expected = encoder.encode(requests, sampling_options(pre, seed + 0), min_pixels=pre.min_pixels, max_pixels=pre.max_pixels)
    shards = FeatureShards(features_dir(lvlm_features))
    for row, out in enumerate(expected):
        features, ids = shards[row]
        assert torch.equal(ids, out.token_ids)
        assert torch.equal(features, out.features.to(torch.bfloat16))


def test_restart_skips_finished_shards_and_redoes_the_rest_identically(tmp_path: Path, lvlm_features: Config, run_config,
                                                                        stage_a_settings):
    folder = tmp_path / "features"
    config = run_config(*stage_a_settings(folder))
    source = features_dir(lvlm_features)
    for name in ["manifest.json"] + [f"shard-{i:06d}.{ext}" for i in (0, 1, 3) for ext in ("json", "safetensors")]:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes((source / name).read_bytes())  # an interrupted job: shard 2 never finished
    (folder / "shard-000002.safetensors").write_bytes(b"half written")
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-00000[013].*")}
    precompute(config)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-00000[013].*")} == before
    assert finished_shards(folder) == [0, 1, 2, 3]
    redone, original = load_file(str(folder / "shard-000002.safetensors")), load_file(str(source / "shard-000002.safetensors"))
    assert all(torch.equal(redone[k], original[k]) for k in original)
    assert (folder / "shard-000002.json").read_text() == (source / "shard-000002.json").read_text()
    assert not list(folder.glob("*.tmp"))


def test_changed_settings_refuse_to_mix_into_a_features_folder(tmp_path: Path, lvlm_features: Config, run_config,
                                                               stage_a_settings):
    folder = tmp_path / "features"
    folder.mkdir()
    (folder / "manifest.json").write_bytes((features_dir(lvlm_features) / "manifest.json").read_bytes())
    config = run_config(*stage_a_settings(folder), "precompute.max_new_tokens=7")
    with pytest.raises(ThinkDiffError, match="max_new_tokens|sampling"):
        precompute(config)
    assert os.listdir(folder) == ["manifest.json"]
