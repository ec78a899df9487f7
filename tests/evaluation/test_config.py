"""The run config: defaults are the paper's settings, a TOML file plus overrides, and bad settings explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.cobsat.config import load_config
from evaluation.cobsat.prompt import INSTRUCTION
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
    ("run.shard_index=2", "shard_index must be 0..num_shards-1"),
    ("generate.batch_size=0", "batch sizes must be at least 1"),
    ("generate.steps=2.5", r"\[generate\] steps must be a int"),
    ("judge.folderr=x", r"unknown setting\(s\) in \[judge\]: folderr"),
])
def test_bad_settings_are_explained(override: str, message: str):
    with pytest.raises(ThinkDiffError, match=message):
        load_config(None, [override])


def test_missing_inputs_are_explained(tmp_path: Path):
    config = load_config(None, [f'run.output_dir="{tmp_path}"'])
    with pytest.raises(ThinkDiffError, match=r"set \[data\] prompt_list"):
        config.samples()
    with pytest.raises(ThinkDiffError, match=r"set \[data\] dataset_root"):
        config.dataset_root  # noqa: B018
