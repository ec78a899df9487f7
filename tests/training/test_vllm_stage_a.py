"""The vLLM backend's plumbing, without vLLM: prompts, seeds, the answer rows, end tokens, engine and sampling arguments,
which phases a rerun starts, process and GPU placement, errors. Its shards are compared with the transformers backend's
in test_vllm_parity.py (in .dev/venv-vllm)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.support.vlm_states import prefill_states
from tests.training.conftest import tiny_run_config
from thinkdiff.errors import ThinkDiffError
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import VLMRequest
from training import vllm_stage_a
from training.config import Config, load_config
from training.pairs import Pair
from training.precompute import precompute
from training.stage_a_plan import instruction_for, unfinished_shards
from training.vllm_stage_a import (
    TOKENS_DIR,
    Launch,
    answer_rows,
    engine_arguments,
    gpu_group,
    pending_shards,
    prompt_ids,
    request_samples,
    sampling_arguments,
    stop_token_ids,
    tokens_file,
)


def test_the_prompt_is_the_librarys_with_one_image_token(encoder):
    """vLLM gets the library's prompt tokens with the image placeholder unexpanded (it expands it itself)."""
    instruction = "Describe the image concisely."
    expanded = encoder.prepare([VLMRequest(instruction, [Image.new("RGB", (56, 84))])])["input_ids"][0].tolist()
    image = encoder.model.config.image_token_id
    collapsed = [t for i, t in enumerate(expanded) if t != image or expanded[i - 1] != image]
    assert prompt_ids(encoder.processor.tokenizer, instruction) == collapsed and collapsed.count(image) == 1


def test_each_sample_is_seeded_by_its_index_whatever_the_batch(qwen_tokenizer):
    """Run seed + dataset index, with the plan's instruction and its prompt: a sample's request is the same alone, in a
    batch or after a restart on another process."""
    config = load_config(None, ["run.seed=1000", 'precompute.instructions=["Describe it.", "What is shown?", "Name it."]'])
    items = [(index, Pair(f"k{index}", Image.new("RGB", (56, 56)), "")) for index in (3, 4, 17)]
    together = request_samples(config, qwen_tokenizer, items)
    assert [s["seed"] for s in together] == [1003, 1004, 1017] and [s["key"] for s in together] == ["k3", "k4", "k17"]
    assert [s["index"] for s in together] == [3, 4, 17]
    instructions = [instruction_for(config.precompute.instructions, 1000, index) for index in (3, 4, 17)]
    assert [s["instruction"] for s in together] == instructions and len(set(instructions)) > 1
    assert [s["prompt_ids"] for s in together] == [prompt_ids(qwen_tokenizer, text) for text in instructions]
    assert [request_samples(config, qwen_tokenizer, [item])[0] for item in reversed(items)] == together[::-1]


def test_the_answer_rows_are_the_states_that_sampled_the_answer(encoder):
    """vLLM's pooling returns the final-norm state of every position of prompt + answer; rows P-1 .. P+N-2 are the ones
    the library keeps while it generates (row k sampled token k). Here the full-sequence states come from one forward
    of the same model over prompt + answer, against the library's incremental generation."""
    inputs = encoder.prepare([VLMRequest("Describe the image concisely.", [Image.new("RGB", (56, 84), (200, 30, 90))])])
    out = encoder.generate(inputs, SamplingOptions(max_new_tokens=7, temperature=1.3, top_p=0.95, stop_at_eos=False, seed=5))[0]
    assert len(out.token_ids) == 7
    states = prefill_states(encoder, inputs, out.token_ids)
    assert states.shape[0] == inputs["input_ids"].shape[1] + 7
    torch.testing.assert_close(answer_rows(states, 7), out.features, rtol=0, atol=1e-5)
    for shifted in (states[-9:-2], states[-7:]):  # a row off does not pass
        assert not torch.allclose(shifted, out.features, atol=1e-2)


def test_the_sampling_arguments_are_stage_as(tiny_vlm_folder: Path):
    config = load_config(None, [f"precompute.vlm={str(tiny_vlm_folder)!r}", "precompute.temperature=0.7",
                                "precompute.top_p=0.8", "precompute.max_new_tokens=33"])
    assert sampling_arguments(config) == {"temperature": 0.7, "top_p": 0.8, "max_tokens": 33, "min_tokens": 1,
                                          "ignore_eos": True, "stop_token_ids": [151645, 151643]}
    config.precompute.greedy = True
    assert sampling_arguments(config)["temperature"] == 0.0


def test_the_end_tokens_are_the_librarys(encoder, tiny_vlm_folder: Path):
    assert stop_token_ids(tiny_vlm_folder) == encoder.eos_token_id == [151645, 151643]


def test_the_end_tokens_fall_back_to_the_models_config(tiny_vlm_folder: Path, tmp_path: Path):
    """A folder without a generation config stops at its model config's end token; a single id becomes a list."""
    shutil.copy(tiny_vlm_folder / "config.json", tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    eos = saved.get("text_config", {}).get("eos_token_id", saved.get("eos_token_id"))  # transformers 5.x / 4.x layout
    assert eos is not None and stop_token_ids(tmp_path) == (eos if isinstance(eos, list) else [eos])
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 7}), encoding="utf-8")
    assert stop_token_ids(tmp_path) == [7]


def test_require_vllm_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(vllm_stage_a.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ThinkDiffError) as error:
        vllm_stage_a.require_vllm()
    assert str(error.value) == vllm_stage_a.INSTALL_HINT


def test_engine_arguments_the_config_then_the_phase():
    config = load_config(None, ['precompute.vlm="models/qwen"', 'precompute.dtype="fp32"', "precompute.max_pixels=200704",
                                "precompute.vllm={tensor_parallel_size = 2, max_model_len = 8192, runner = \"generate\"}"])
    arguments = engine_arguments(config, runner="pooling")
    assert arguments["model"] == str(Path("models/qwen").resolve()) and arguments["dtype"] == torch.float32
    assert (arguments["tensor_parallel_size"], arguments["max_model_len"], arguments["runner"]) == (2, 8192, "pooling")
    assert arguments["mm_processor_kwargs"] == {"size": {"shortest_edge": 3136, "longest_edge": 200704}}
    assert arguments["generation_config"] == "vllm" and arguments["limit_mm_per_prompt"] == {"image": 1, "video": 0}


def test_launch_from_torchrun_variables(monkeypatch: pytest.MonkeyPatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert Launch.from_environment() == Launch(0, 1, None)
    monkeypatch.setenv("RANK", "11")
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert Launch.from_environment() == Launch(11, 16, 3)


def test_each_local_process_gets_its_tensor_parallel_group():
    assert [gpu_group(rank, 1, None, 8) for rank in range(8)] == [str(i) for i in range(8)]
    assert [gpu_group(rank, 2, None, 8) for rank in range(4)] == ["0,1", "2,3", "4,5", "6,7"]
    assert gpu_group(1, 2, "4,5,6,7", 8) == "6,7"  # within what the launcher made visible
    with pytest.raises(ThinkDiffError, match="needs 4 GPU.*sees 8 .all.: start 2 process"):
        gpu_group(2, 4, None, 8)


def test_a_process_bound_to_its_own_gpus_uses_them():
    """SLURM with --gpus-per-task: every task sees CUDA_VISIBLE_DEVICES=0 (or 0,1 for two) whatever its LOCAL_RANK."""
    assert [gpu_group(rank, 1, "0", 1) for rank in range(4)] == ["0"] * 4
    assert [gpu_group(rank, 2, "0,1", 2) for rank in range(1, 4)] == ["0,1"] * 3
    assert gpu_group(0, 1, "3", 8) == "3"
    with pytest.raises(ThinkDiffError, match="local process 2 needs 2 GPU.*sees 3 .0,1,2.*2 GPU.s. of its own"):
        gpu_group(2, 2, "0,1,2", 3)


def test_data_parallel_processes_split_the_shards(tmp_path: Path):
    """16 samples in shards of 5 -> shards 0-3; two processes take 0, 2 and 1, 3 (the transformers backend's split)."""
    assert [unfinished_shards(tmp_path, 16, 5, rank, 2) for rank in range(2)] == [[0, 2], [1, 3]]
    (tmp_path / "shard-000002.json").write_text("{}")
    assert unfinished_shards(tmp_path, 16, 5, 0, 2) == [0]


def test_each_phase_resumes_where_it_stopped(tmp_path: Path):
    """Shard 0 finished; 1 answered; 2 not answered (a half-written tokens file does not count); 3 answered, half written.
    Phase 1 answers shard 2 alone; phase 2 finishes 1, 2 and 3. Two processes split the same work."""
    (tmp_path / TOKENS_DIR).mkdir()
    (tmp_path / "shard-000000.json").write_text("{}")
    for shard in (1, 3):
        tokens_file(tmp_path, shard).write_text("{}")
    tokens_file(tmp_path, 2).with_suffix(".json.tmp").write_text('{"sampl')
    (tmp_path / "shard-000003.safetensors").write_bytes(b"half")
    assert pending_shards(tmp_path, 16, 5, Launch()) == ([2], [1, 2, 3])
    assert [pending_shards(tmp_path, 16, 5, Launch(rank, 2)) for rank in range(2)] == [([2], [2]), ([], [1, 3])]


def test_unknown_backend(run_config):
    with pytest.raises(ThinkDiffError, match="backend must be one of transformers, vllm"):
        run_config('precompute.backend="sglang"')


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_error_says_how_to_get_it(run_config):
    with pytest.raises(ThinkDiffError, match="pip install vllm.*bootstrap_vllm.sh"):
        precompute(run_config('precompute.vlm="x"', 'precompute.backend="vllm"'))


@pytest.fixture
def vllm_run(tmp_path: Path, lvlm_features: Config, stage_a_settings, monkeypatch: pytest.MonkeyPatch):
    """A vLLM-backend config on the transformers run's settings, with shard 0 and the manifest already there; the
    phases it would start are recorded instead of started (their engines are tested in test_vllm_parity.py)."""
    folder = tmp_path / "features"
    folder.mkdir()
    done = lvlm_features.path(lvlm_features.precompute.features_dir)
    for name in ("manifest.json", "shard-000000.json", "shard-000000.safetensors"):
        shutil.copy(done / name, folder / name)
    started: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(vllm_stage_a, "require_vllm", lambda: None)
    monkeypatch.setattr(vllm_stage_a, "_run_phase", lambda name, config, pairs, shards, *rest: started.append((name, shards)))
    return tiny_run_config(tmp_path / "run", *stage_a_settings(folder), 'precompute.backend="vllm"'), folder, started


def test_a_resumed_run_starts_only_the_phases_with_work(vllm_run):
    """Shards 1-3 answered: no generation engine, one states phase. Then nothing answered (tokens files gone, shards 1-3
    unfinished): both phases. All finished: none."""
    config, folder, started = vllm_run
    (folder / TOKENS_DIR).mkdir()
    for shard in (1, 2, 3):
        tokens_file(folder, shard).write_text("{}")
    precompute(config)
    assert started == [("states", [1, 2, 3])]
    shutil.rmtree(folder / TOKENS_DIR)
    started.clear()
    precompute(config)
    assert started == [("tokens", [1, 2, 3]), ("states", [1, 2, 3])]
    for shard in (1, 2, 3):
        (folder / f"shard-{shard:06d}.json").write_text("{}")
    started.clear()
    precompute(config)
    assert started == []
