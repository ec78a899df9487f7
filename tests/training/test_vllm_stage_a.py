"""The vLLM backend's plumbing, without vLLM: prompts, end tokens, engine arguments, process and GPU placement, errors.
Its shards are compared with the transformers backend's in test_vllm_parity.py (in .dev/venv-vllm)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image

from thinkdiff.errors import ThinkDiffError
from thinkdiff.vlm import VLMRequest
from training.config import load_config
from training.precompute import precompute
from training.stage_a_plan import unfinished_shards
from training.vllm_stage_a import (
    TOKENS_DIR,
    Launch,
    engine_arguments,
    gpu_group,
    pending_shards,
    prompt_ids,
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


def test_the_end_tokens_are_the_librarys(encoder, tiny_vlm_folder: Path):
    assert stop_token_ids(tiny_vlm_folder) == encoder.eos_token_id == [151645, 151643]


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
    with pytest.raises(ThinkDiffError, match="needs 4 GPU.*has 8: start 2 process"):
        gpu_group(2, 4, None, 8)


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
