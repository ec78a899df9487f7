"""Stage A: stored features are the library's encode output; shards are resumable and reproducible."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from thinkdiff.errors import ThinkDiffError
from thinkdiff.manifest import write_manifest_if_new
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder, VLMRequest
from training.config import Config, PrecomputeConfig, load_config
from training.feature_store import FeatureShards, GeneratedSample, features_manifest, finished_shards, write_shard
from training.pairs import Pair, pairs_from_config
from training.precompute import precompute
from training.stage_a_plan import (
    FIXED_MANIFEST_KEYS,
    ReadyImages,
    ShardBatches,
    check_and_write_manifest,
    instruction_for,
    manifest_for,
    on_every_process,
    sampling_options,
    unfinished_shards,
)
from training.transformers_stage_a import generate_batch


def features_dir(config: Config) -> Path:
    return config.path(config.precompute.features_dir)


def test_features_equal_the_library_encode_output(lvlm_features: Config, encoder):
    """Each batch is one generation seeded by the run seed + its first index: batch 0 of shards 0 and 1, and shard 2's
    last batch (13, and 14 unreadable). Dataset index = row here (the one unreadable entry is the last but one).
    The first test to use ``lvlm_features``: stage A runs in its setup, so mutation testing links it to stage A's code."""
    pre, seed = lvlm_features.precompute, lvlm_features.run.seed
    records = [json.loads((features_dir(lvlm_features) / f"shard-{i:06d}.json").read_text()) for i in range(4)]
    stored = [sample["instruction"] for record in records for sample in record["samples"]]
    assert stored == [instruction_for(pre.instructions, seed, index) for index in range(16) if index != 14]
    assert [record["skipped"] for record in records] == [0, 0, 1, 0]  # broken.png is entry 14, in shard 2
    manifest = json.loads((features_dir(lvlm_features) / "manifest.json").read_text())
    assert (manifest["hidden_size"], manifest["num_samples"]) == (encoder.hidden_size, 16) == (64, 16)
    ready = ReadyImages(pairs_from_config(lvlm_features, require_caption=False), pre.min_pixels, pre.max_pixels)
    shards = FeatureShards(features_dir(lvlm_features))
    for first, count in ((0, 3), (5, 3), (13, 1)):
        batch = [ready[i][1] for i in range(first, first + count)]
        requests = [VLMRequest(instruction_for(pre.instructions, seed, i), [pair.image]) for i, pair in enumerate(batch, first)]
        expected = encoder.encode(requests, sampling_options(pre, seed + first), min_pixels=pre.min_pixels, max_pixels=pre.max_pixels)
        for row, out in enumerate(expected, first):
            features, ids = shards[row]
            assert torch.equal(ids, out.token_ids)
            assert torch.equal(features, out.features.to(torch.bfloat16))


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


def test_stage_a_runs_the_vlm_at_the_configured_precision(tmp_path: Path, tiny_vlm_folder: Path, photo_set: Path, run_config,
                                                          stage_a_settings):
    """``[precompute] dtype = "bf16"``: the features are what the bf16 model generates (two images in shard 0), stored
    as ``storage_dtype`` says; shard 1 holds only an unreadable image: an empty shard of the model's width."""
    (tmp_path / "two.jsonl").write_text('{"image": "images/coffee.png", "caption": ""}\n{"image": "images/rocket.png", "caption": ""}\n'
                                        '{"image": "images/broken.png", "caption": ""}\n')
    config = run_config(*stage_a_settings(tmp_path / "features"), 'precompute.dtype="bf16"', 'precompute.storage_dtype="fp32"',
                        "precompute.samples_per_shard=2",
                        f"data.captions={json.dumps(str(tmp_path / 'two.jsonl'))}", f"data.images={json.dumps(str(photo_set))}")
    pre, seed = config.precompute, config.run.seed
    precompute(config)
    ready = ReadyImages(pairs_from_config(config, require_caption=False), pre.min_pixels, pre.max_pixels)
    requests = [VLMRequest(instruction_for(pre.instructions, seed, i), [ready[i][1].image]) for i in range(2)]
    bf16 = QwenVLEncoder.from_folder(tiny_vlm_folder, dtype=torch.bfloat16)
    expected = bf16.encode(requests, sampling_options(pre, seed), min_pixels=pre.min_pixels, max_pixels=pre.max_pixels)
    shards = FeatureShards(tmp_path / "features")
    assert len(shards) == 2
    for row, out in enumerate(expected):
        assert torch.equal(shards[row][1], out.token_ids) and shards[row][0].dtype == torch.float32
        assert torch.equal(shards[row][0], out.features.float())
    empty = load_file(str(tmp_path / "features" / "shard-000001.safetensors"))
    assert (empty["features"].shape, empty["features"].dtype) == ((0, 64), torch.float32)
    assert json.loads((tmp_path / "features" / "shard-000001.json").read_text()) == {"samples": [], "skipped": 1}


def test_a_batch_of_unreadable_images_generates_nothing():
    assert generate_batch(None, [(3, None), (4, None)], PrecomputeConfig(), 0) == []  # no model call at all


def test_a_batch_is_one_generation_with_the_plans_settings():
    """What a batch asks the library for (recorded by a stand-in encoder): the plan's instructions, the pixel budget,
    ``max_new_tokens`` for the context check, and the sampling seed of the first usable index."""
    calls = {}

    class Encoder:
        def prepare(self, requests, min_pixels, max_pixels, max_new_tokens):
            calls["prepare"] = (requests, min_pixels, max_pixels, max_new_tokens)
            return "inputs"

        def generate(self, inputs, options):
            calls["generate"] = (inputs, options)
            return [SimpleNamespace(features=torch.full((2, 3), float(n)), token_ids=torch.tensor([n, 1]), text=f"answer {n}")
                    for n in range(2)]

    config = PrecomputeConfig(instructions=["A?", "B?", "C?"], min_pixels=100, max_pixels=200, max_new_tokens=9)
    image = Image.new("RGB", (8, 8))
    samples = generate_batch(Encoder(), [(4, None), (5, Pair("k5", image, "")), (6, Pair("k6", image, ""))], config, 1000)
    instructions = [random.Random(f"1000:instruction:{index}").choice(["A?", "B?", "C?"]) for index in (5, 6)]
    requests, *budget = calls["prepare"]
    assert [(r.prompt, list(r.images)) for r in requests] == [(text, [image]) for text in instructions] and budget == [100, 200, 9]
    assert calls["generate"] == ("inputs", SamplingOptions(max_new_tokens=9, stop_at_eos=True, seed=1005))
    assert [(s.key, s.instruction, s.text, s.token_ids.tolist(), s.features.tolist()) for s in samples] == [
        ("k5", instructions[0], "answer 0", [0, 1], [[0.0] * 3] * 2), ("k6", instructions[1], "answer 1", [1, 1], [[1.0] * 3] * 2)]


def test_restart_skips_finished_shards_and_redoes_the_rest_identically(tmp_path: Path, lvlm_features: Config, run_config,
                                                                        stage_a_settings, capsys):
    folder = tmp_path / "features"
    config = run_config(*stage_a_settings(folder))
    source = features_dir(lvlm_features)
    for name in ["manifest.json"] + [f"shard-{i:06d}.{ext}" for i in (0, 1, 3) for ext in ("json", "safetensors")]:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes((source / name).read_bytes())  # an interrupted job: shard 2 never finished
    (folder / "shard-000002.safetensors").write_bytes(b"half written")
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-00000[013].*")}
    capsys.readouterr()
    assert precompute(config) == folder
    # progress on shard 2's 5 entries (10..14) in batches of 3, reported at each batch (progress_every_s = 0)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[precompute")]
    assert [line.split(",")[0] for line in printed] == ["[precompute 0]: 3/5 samples", "[precompute 0]: 5/5 samples"]
    assert all(re.fullmatch(r"[^,]+, [\d.]+ samples/s, [\d.]+ tokens/s, ETA \d+m\d\ds", line) for line in printed)
    samples_rate, tokens_rate = (float(part.split()[0]) for part in printed[-1].split(", ")[1:3])
    tokens = int(load_file(str(source / "shard-000002.safetensors"))["offsets"][-1])  # the shard's generated tokens
    assert tokens > 0 and abs(tokens_rate - samples_rate * tokens / 5) <= 0.05 + 0.005 * tokens / 5 + 1e-9  # within the rounding
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


def test_each_sample_draws_its_instruction_from_its_own_generator():
    instructions = ["Describe it.", "What is shown?", "Name it."]
    picks = [instruction_for(instructions, 7, index) for index in range(60)]
    assert picks == [random.Random(f"7:instruction:{index}").choice(instructions) for index in range(60)]
    assert set(picks) == set(instructions) and picks != [instruction_for(instructions, 8, index) for index in range(60)]


def test_the_sampling_options_are_the_configs_and_stop_at_the_end_token():
    config = PrecomputeConfig(max_new_tokens=7, temperature=0.3, top_p=0.5, greedy=True)
    assert sampling_options(config, 1234) == SamplingOptions(max_new_tokens=7, temperature=0.3, top_p=0.5, greedy=True,
                                                             stop_at_eos=True, seed=1234)


def test_ready_images_are_sized_as_qwen2_vls_processor_would():
    wide, small, odd = Image.new("RGB", (200, 100), "red"), Image.new("RGB", (3, 3)), Image.new("RGB", (600, 2))
    pairs = [Pair("wide", wide, "a red field"), None, Pair("small", small, ""), Pair("odd", odd, "")]
    ready = ReadyImages(pairs, 3136, 12_544)
    assert len(ready) == 4
    index, pair = ready[0]
    height, width = smart_resize(100, 200, factor=28, min_pixels=3136, max_pixels=12_544)
    assert index == 0 and (pair.key, pair.caption, pair.image.size) == ("wide", "a red field", (width, height)) == (
        "wide", "a red field", (140, 56))
    assert ready[1] == (1, None)  # unreadable
    assert ready[2][0] == 2 and ready[2][1].image.size == (56, 56)  # upscaled to the minimum
    assert ready[3] == (3, None)  # 300:1 is past Qwen2-VL's aspect ratio limit


def test_shard_batches_never_cross_a_shard_boundary():
    batches = ShardBatches([2, 0], samples_per_shard=5, num_samples=13, batch_size=2)
    assert list(batches) == [[10, 11], [12], [0, 1], [2, 3], [4]] and len(batches) == 5
    assert batches.shard_range(2) == range(10, 13) and batches.shard_range(1) == range(5, 10)
    assert len(ShardBatches([0, 1], 4, 8, 3)) == 4 and list(ShardBatches([0, 1], 4, 8, 3)) == [[0, 1, 2], [3], [4, 5, 6], [7]]


def test_unfinished_shards_are_this_processs_share_of_those_not_done(tmp_path: Path):
    for shard in (1, 4):
        (tmp_path / f"shard-{shard:06d}.json").write_text("{}")
    (tmp_path / "shard-000003.safetensors").write_text("half written: not finished")
    assert unfinished_shards(tmp_path, 26, 5, 0, 1) == [0, 2, 3, 5]  # ceil(26 / 5) = 6 shards
    assert [unfinished_shards(tmp_path, 25, 5, rank, 2) for rank in range(2)] == [[0, 2], [3]]


def test_the_manifest_records_the_plan(tmp_path: Path):
    config = load_config(None, [f"precompute.vlm={json.dumps(str(tmp_path / 'Qwen2-VL-7B'))}", 'precompute.dtype="fp32"',
                                'precompute.storage_dtype="fp32"', "precompute.samples_per_shard=9", "run.seed=5",
                                "precompute.max_new_tokens=20", "precompute.temperature=0.7", "precompute.top_p=0.8",
                                "precompute.greedy=true", 'precompute.instructions=["Describe it."]', "precompute.min_pixels=100",
                                "precompute.max_pixels=200"])
    assert manifest_for(config, 64, 30) == {
        "vlm": "Qwen2-VL-7B", "vlm_path": str(tmp_path / "Qwen2-VL-7B"), "hidden_size": 64, "dtype": "fp32",
        "storage_dtype": "fp32", "num_samples": 30, "samples_per_shard": 9, "seed": 5,
        "sampling": {"max_new_tokens": 20, "temperature": 0.7, "top_p": 0.8, "greedy": True, "stop_at_eos": True},
        "instructions": ["Describe it."], "min_pixels": 100, "max_pixels": 200}


MANIFEST = {"vlm": "Qwen2-VL-7B", "vlm_path": "/models/Qwen2-VL-7B", "hidden_size": 64, "dtype": "bf16", "storage_dtype": "bf16",
            "num_samples": 30, "samples_per_shard": 9, "seed": 5, "sampling": {"top_p": 0.9}, "instructions": ["Describe it."],
            "min_pixels": 100, "max_pixels": 200}


@pytest.mark.parametrize("key", sorted(MANIFEST))
def test_a_features_folder_refuses_other_settings_but_a_moved_model(tmp_path: Path, key: str):
    check_and_write_manifest(tmp_path, MANIFEST)
    assert json.loads((tmp_path / "manifest.json").read_text()) == MANIFEST
    check_and_write_manifest(tmp_path, dict(MANIFEST))  # the same settings: go on
    changed = {**MANIFEST, key: "other"}
    if key == "vlm_path":  # the same model in another place
        assert key not in FIXED_MANIFEST_KEYS
        check_and_write_manifest(tmp_path, changed)
    else:
        with pytest.raises(ThinkDiffError, match=f"\\({key} differ\\): use a new \\[precompute\\] features_dir or restore the settings$"):
            check_and_write_manifest(tmp_path, changed)
    assert json.loads((tmp_path / "manifest.json").read_text()) == MANIFEST  # the first record stays


def test_every_process_raises_when_one_fails():
    def fails(message, error=ThinkDiffError):
        def step():
            raise error(message)
        return step

    assert on_every_process(lambda: 3, lambda error: [error]) == 3
    with pytest.raises(ThinkDiffError, match="^disk full$"):
        on_every_process(fails("disk full", OSError), lambda error: [error])  # one process: its message alone
    with pytest.raises(ThinkDiffError, match="^process 1: no manifest; process 2: bad$"):
        on_every_process(lambda: 3, lambda error: [error, "no manifest", "bad"])  # this process (rank 0) did fine
    with pytest.raises(ThinkDiffError, match="^process 0: mine; process 2: bad$"):
        on_every_process(fails("mine"), lambda error: [error, None, "bad"])
    with pytest.raises(KeyError):  # a bug is not shared: it fails here as it is
        on_every_process(fails("bug", KeyError), lambda error: [error])


def _sample(key: str, rows: int, first_id: int, text: str) -> GeneratedSample:
    features = torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3) / 7 + first_id
    return GeneratedSample(key, f"Describe {key}.", features, torch.arange(first_id, first_id + rows, dtype=torch.int32), text)


def test_a_shard_stores_each_samples_rows_and_reads_back(tmp_path: Path, ascii_locale):
    """Under an ASCII locale too: the records are UTF-8 whatever the machine's locale."""
    samples = [_sample("a", 2, 10, "Un café."), _sample("b", 3, 20, "A cat."), _sample("c", 1, 30, "")]
    write_shard(tmp_path, 12, samples[:2], 3, skipped=1)
    write_shard(tmp_path, 3, samples[2:], 3, skipped=0, dtype=torch.float32)
    write_shard(tmp_path, 7, [], 3, skipped=4)  # every input of the shard unreadable
    tensors = load_file(str(tmp_path / "shard-000012.safetensors"))
    assert tensors["offsets"].tolist() == [0, 2, 5] and tensors["token_ids"].tolist() == [10, 11, 20, 21, 22]
    assert tensors["token_ids"].dtype == torch.int64 and tensors["features"].dtype == torch.bfloat16
    assert torch.equal(tensors["features"], torch.cat([samples[0].features, samples[1].features]).to(torch.bfloat16))
    raw = (tmp_path / "shard-000012.json").read_bytes()
    assert "Un café.".encode() in raw  # UTF-8 text, not \\u escapes
    assert json.loads(raw) == {"samples": [{"key": "a", "instruction": "Describe a.", "text": "Un café."},
                                           {"key": "b", "instruction": "Describe b.", "text": "A cat."}], "skipped": 1}
    empty = load_file(str(tmp_path / "shard-000007.safetensors"))
    assert (empty["features"].shape, empty["features"].dtype) == ((0, 3), torch.bfloat16)
    assert (empty["token_ids"].shape, empty["token_ids"].dtype, empty["offsets"].tolist()) == ((0,), torch.int64, [0])
    (tmp_path / "shard-000005.safetensors").write_bytes(b"an unfinished shard: no .json yet")
    assert finished_shards(tmp_path) == [3, 7, 12]  # by number

    with pytest.raises(ThinkDiffError, match=f"^{re.escape(str(tmp_path))} holds no precomputed features \\(manifest.json missing\\): run "
                                             "`python -m training precompute` first$"):
        FeatureShards(tmp_path)
    write_manifest_if_new(tmp_path, {"hidden_size": 3})
    assert features_manifest(tmp_path) == {"hidden_size": 3}
    shards = FeatureShards(tmp_path)
    assert (len(shards), shards.skipped_inputs, shards.manifest) == (3, 5, {"hidden_size": 3})
    for row, sample in enumerate([samples[2], samples[0], samples[1]]):  # shard 3, then 12
        features, ids = shards[row]
        assert features.dtype == (torch.float32 if row == 0 else torch.bfloat16)
        assert torch.equal(features, sample.features.to(features.dtype)) and ids.tolist() == sample.token_ids.tolist()
    copy = pickle.loads(pickle.dumps(shards))  # to a DataLoader worker: without the open files
    assert copy._open == {} and len(shards._open) == 2 and copy.index == shards.index
    assert torch.equal(copy[2][0], shards[2][0]) and len(copy._open) == 1


def test_a_features_folder_without_finished_shards_says_so(tmp_path: Path):
    write_manifest_if_new(tmp_path, {"hidden_size": 3})
    with pytest.raises(ThinkDiffError, match=f"^{re.escape(str(tmp_path))} has no finished feature shards$"):
        FeatureShards(tmp_path)
    write_shard(tmp_path, 0, [], 3, skipped=2)
    with pytest.raises(ThinkDiffError, match="has no finished feature shards"):  # a shard of unreadable inputs only
        FeatureShards(tmp_path)


def test_stage_a_needs_a_vlm(run_config):
    with pytest.raises(ThinkDiffError, match=r"^set \[precompute\] vlm to a Qwen2-VL\(-Instruct\) Hugging Face folder$"):
        precompute(run_config())
