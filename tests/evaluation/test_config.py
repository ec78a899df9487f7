"""The run config: defaults are the paper's settings, a TOML file plus overrides, and bad settings explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.cobsat.config import load_config
from evaluation.cobsat.prompt import INSTRUCTION
from evaluation.cobsat.samples import build_samples, write_samples
from thinkdiff.errors import ThinkDiffError
from thinkdiff.images import REFERENCE_MAX_PIXELS, REFERENCE_MIN_PIXELS


def test_defaults_are_the_papers_settings():
    config = load_config()
    gen, judge = config.generate, config.judge
    assert (gen.max_new_tokens, gen.temperature, gen.top_p, gen.width, gen.height, gen.steps, gen.guidance) == (
        128, 0.6, 0.9, 512, 512, 28, 3.5)
    assert (gen.min_pixels, gen.max_pixels, gen.instruction, gen.backend) == (REFERENCE_MIN_PIXELS, REFERENCE_MAX_PIXELS,
                                                                              INSTRUCTION, "diffusers")
    assert (judge.model, judge.max_new_tokens, judge.dtype) == ("llava", 512, "fp16")
    assert (config.run.tasks, config.run.shots, config.run.samples_per_task) == (list(range(1, 11)), [2, 4], 1000)


def test_file_then_overrides(tmp_path: Path):
    (tmp_path / "cobsat.toml").write_text('[run]\noutput_dir = "out"\nshots = [4]\n[generate]\nguidance = 4\n')
    config = load_config(tmp_path / "cobsat.toml", ["run.tasks=[1, 3]", 'generate.backend="comfyui"'])
    assert (config.run.shots, config.run.tasks, config.generate.backend, config.generate.guidance) == ([4], [1, 3], "comfyui", 4.0)
    assert config.output_dir == tmp_path / "out" and config.samples_file == tmp_path / "out" / "samples.jsonl"


@pytest.mark.parametrize(("override", "message"), [
    ('generate.backend="vllm"', r"\[generate\] backend must be one of diffusers, comfyui, oracle, random"),
    ('judge.dtype="int8"', r"\[judge\] dtype must be one of bf16, fp16, fp32"),
    ("run.shots=[3]", "shots must be among 2, 4, 6, 8"),
    ("run.samples_per_task=1001", "samples_per_task must be 1-1000"),
    ("run.shard_index=2", r"^\[run\] shard_index must be 0..num_shards-1, got 2 of 1$"),
    ("run.shard_index=1", r"^\[run\] shard_index must be 0..num_shards-1, got 1 of 1$"),
    ("run.shard_index=-1", r"^\[run\] shard_index must be 0..num_shards-1, got -1 of 1$"),
    ("generate.batch_size=0", "^batch sizes must be at least 1$"),
    ("judge.batch_size=0", "^batch sizes must be at least 1$"),
    ("generate.steps=2.5", r"\[generate\] steps must be a int"),
    ("judge.folderr=x", r"unknown setting\(s\) in \[judge\]: folderr"),
])
def test_bad_settings_are_explained(override: str, message: str):
    with pytest.raises(ThinkDiffError, match=message):
        load_config(None, [override])


def test_the_smallest_settings_are_allowed():
    config = load_config(None, ["generate.batch_size=1", "judge.batch_size=1", "run.num_shards=3", "run.shard_index=2"])
    assert (config.generate.batch_size, config.judge.batch_size, config.run.shard_index) == (1, 1, 2)


def test_a_samples_file_is_filtered_by_the_selection(tmp_path: Path, prompt_list: Path):
    """A samples file (e.g. the full benchmark's) gives only the configured tasks, shots and first entries."""
    everything = build_samples(prompt_list, [1, 2], [2, 4], count=3)
    write_samples(everything, tmp_path / "all.jsonl")
    config = load_config(None, [f'data.samples="{tmp_path / "all.jsonl"}"', "run.tasks=[2]", "run.shots=[4]", "run.samples_per_task=2"])
    assert config.samples() == [s for s in everything if (s.task, s.shot) == (2, 4) and s.index in (0, 1)]
    assert [s.key for s in config.samples()] == [(4, 2, 0), (4, 2, 1)]


def test_missing_inputs_are_explained(tmp_path: Path):
    config = load_config(None, [f'run.output_dir="{tmp_path}"'])
    with pytest.raises(ThinkDiffError) as error:
        config.samples()
    assert str(error.value) == (f"no samples file at {tmp_path / 'samples.jsonl'}: set [data] prompt_list to CoBSAT's "
                                "load_datasets/prompts_list_default.json (or [data] samples to a samples .jsonl)")
    with pytest.raises(ThinkDiffError, match=r"set \[data\] dataset_root"):
        config.dataset_root  # noqa: B018
