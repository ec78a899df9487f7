"""The shipped example configs parse with their loaders and hold the reference recipes."""

from pathlib import Path

import pytest

from evaluation.cobsat.config import load_config as load_eval_config
from tests.support.paths import REPO
from training.config import load_config as load_training_config

TRAINING = REPO / "training" / "configs"
EVALUATION = REPO / "evaluation" / "configs"


def test_lvlm_is_the_reference_recipe() -> None:
    config = load_training_config(TRAINING / "lvlm.toml")
    assert config.run.variant == "lvlm"
    assert (config.batch_size, config.max_steps, config.max_target_tokens) == (32, 25_000, 128)
    pre = config.precompute
    assert (pre.max_new_tokens, pre.temperature, pre.top_p, pre.greedy, pre.min_pixels, pre.max_pixels) == (
        256, 0.6, 0.9, False, 3136, 12_845_056)
    assert (config.optim.lr, config.optim.weight_decay, config.optim.warmup_steps, config.optim.min_lr) == (
        1e-4, 0.05, 2000, 8e-5)
    assert config.path(pre.vlm) == TRAINING / "models" / "Qwen2-VL-7B-Instruct"  # relative to the file


def test_clip_is_the_reference_recipe() -> None:
    config = load_training_config(TRAINING / "clip.toml")
    assert config.run.variant == "clip"
    assert (config.batch_size, config.max_steps, config.max_target_tokens) == (42, 100_000, 32)
    assert [(s.shards, s.weight) for s in config.data.all_sources()] == [
        (["data/laion/*.tar"], 115.0), (["data/cc_sbu/*.tar"], 14.0)]
    assert config.model.vision == "models/blip2_vision.safetensors"


def test_cobsat_is_the_papers_protocol() -> None:
    config = load_eval_config(EVALUATION / "cobsat.toml")
    assert (config.run.tasks, config.run.shots, config.run.samples_per_task, config.run.seed) == (
        list(range(1, 11)), [2, 4], 1000, 42)
    assert (config.generate.backend, config.judge.model) == ("diffusers", "llava")


@pytest.mark.parametrize("doc, config", [("docs/evaluation.md", EVALUATION / "cobsat.toml")])
def test_the_docs_show_the_shipped_config(doc: str, config: Path) -> None:
    shown = (REPO / doc).read_text().split(f"# {config.name} (relative paths are relative to this file)\n", 1)[1]
    settings = config.read_text().split("\n", 2)[2]  # past the file's two header lines
    assert shown.startswith(settings)
