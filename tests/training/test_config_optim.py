"""Config loading and overrides; the reference optimiser groups and learning-rate schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from thinkdiff.aligner import Aligner
from thinkdiff.errors import ThinkDiffError
from training.config import REFERENCE_INSTRUCTIONS, OptimConfig, load_config
from training.optim import learning_rate, make_optimizer, parameter_groups, set_learning_rate


def test_defaults_are_the_reference_settings():
    config = load_config()
    assert (config.optim.lr, config.optim.betas, config.optim.weight_decay) == (1e-4, (0.9, 0.999), 0.05)
    assert (config.optim.warmup_steps, config.optim.warmup_lr, config.optim.min_lr) == (2000, 1e-6, 8e-5)
    assert (config.precompute.temperature, config.precompute.top_p, config.precompute.max_new_tokens) == (0.6, 0.9, 256)
    assert config.max_target_tokens == 128 and len(REFERENCE_INSTRUCTIONS) == 16
    assert (config.batch_size, config.max_steps) == (32, 25_000)  # LVLM: 32 per GPU, 25k steps
    assert (config.precompute.min_pixels, config.precompute.max_pixels) == (3136, 12_845_056)  # Qwen2-VL's processor defaults
    clip = load_config(None, ['run.variant="clip"'])
    assert (clip.max_target_tokens, clip.batch_size, clip.max_steps) == (32, 42, 100_000)  # CLIP: 42 per GPU, 100k steps
    assert load_config(None, ['run.variant="clip"', "train.batch_size=7"]).batch_size == 7


def test_weighted_sources_as_in_the_reference_clip_run(tmp_path: Path):
    (tmp_path / "run.toml").write_text('[run]\nvariant = "clip"\n'
                                       '[[data.sources]]\nshards = ["laion/*.tar"]\nweight = 115\n'
                                       '[[data.sources]]\ncaptions = "cc_sbu/captions.jsonl"\nimages = "cc_sbu/images"\nweight = 14\n')
    sources = load_config(tmp_path / "run.toml").data.all_sources()
    assert [(s.shards, s.captions, s.weight) for s in sources] == [(["laion/*.tar"], "", 115.0), ([], "cc_sbu/captions.jsonl", 14.0)]
    single = load_config(None, ['data.captions="pairs.jsonl"']).data.all_sources()
    assert [(s.captions, s.weight) for s in single] == [("pairs.jsonl", 1.0)]
    both = load_config(None, ['data.captions="pairs.jsonl"', 'data.images="pictures"', 'data.shards=["a/*.tar"]']).data.all_sources()
    assert [(s.captions, s.images, s.shards, s.weight) for s in both] == [("pairs.jsonl", "pictures", ["a/*.tar"], 1.0)]
    assert [s.shards for s in load_config(None, ['data.shards=["b.tar"]']).data.all_sources()] == [["b.tar"]]
    assert load_config().data.all_sources() == []  # no data given


BOTH = r"^\[data\]: give the data either as captions/images/shards or as \[\[data.sources\]\] tables, not both$"


@pytest.mark.parametrize("overrides, message", [
    (['data.captions="a.jsonl"', 'data.sources=[{captions="b.jsonl"}]'], BOTH),
    (['data.images="pictures"', 'data.sources=[{captions="b.jsonl"}]'], BOTH),
    (['data.shards=["a.tar"]', 'data.sources=[{captions="b.jsonl"}]'], BOTH),
    (['data.sources=[{captions="b.jsonl", weight=0}]'], r"^\[data.sources\] weights must be positive$"),
    (['data.sources=[{captions="b.jsonl"}, {captions="c.jsonl", weight=-1}]'], r"^\[data.sources\] weights must be positive$"),
    (['run.variant="sdxl"'], r"^\[run\] variant must be one of lvlm, clip, got 'sdxl'$"),
    (['data.sources=[{caption="b.jsonl"}]'], "unknown setting"),
    (['data.sources=["b.jsonl"]'], "list of tables"),
    (["train.keep_checkpoints=-1"], r"^\[train\] keep_checkpoints must be 0 \(keep them all\) or more, got -1$"),
])
def test_bad_sources_are_explained(overrides, message):
    with pytest.raises(ThinkDiffError, match=message):
        load_config(None, overrides)


def test_small_weights_and_keeping_every_checkpoint_are_allowed():
    config = load_config(None, ['data.sources=[{captions="b.jsonl", weight=0.5}]', "train.keep_checkpoints=0"])
    assert [s.weight for s in config.data.all_sources()] == [0.5] and config.train.keep_checkpoints == 0


def test_file_then_overrides(tmp_path: Path):
    (tmp_path / "run.toml").write_text('[run]\nvariant = "clip"\noutput_dir = "out"\n[optim]\nlr = 2e-4\n')
    config = load_config(tmp_path / "run.toml", ["optim.lr=3e-4", "train.batch_size=8", "model.t5=flan"])
    assert (config.run.variant, config.optim.lr, config.train.batch_size) == ("clip", 3e-4, 8)
    assert config.path(config.run.output_dir) == tmp_path / "out"  # relative to the config file
    assert config.model.t5 == "flan"  # a bare word is a string


@pytest.mark.parametrize("override, message", [("optim.lrr=1", "unknown setting"), ("optim.lr=abc", "must be a float"),
                                                ("nope.x=1", "unknown config section"), ("lr=1", "section.key=value")])
def test_bad_settings_are_explained(override: str, message: str):
    with pytest.raises(ThinkDiffError, match=message):
        load_config(None, [override])


def test_weight_decay_only_on_weight_matrices():
    optimizer = make_optimizer(Aligner(8, 16, 4), OptimConfig())
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and [p.shape for p in decay["params"]] == [torch.Size([16, 8]), torch.Size([4, 16])]
    assert no_decay["weight_decay"] == 0.0 and [p.shape for p in no_decay["params"]] == [(16,), (4,), (4,)]
    assert optimizer.defaults["betas"] == (0.9, 0.999)


def test_warmup_then_cosine_schedule():
    config = OptimConfig()
    assert learning_rate(0, config) == pytest.approx(1e-6)
    assert learning_rate(1000, config) == pytest.approx(1e-6 + (1e-4 - 1e-6) / 2)
    assert learning_rate(2000, config) == pytest.approx(2e-5 * 0.5 * (1 + math.cos(math.pi * 0.01)) + 8e-5)
    assert learning_rate(25_000, config) == pytest.approx(9.92e-5, abs=1e-7)  # the reference LVLM stop: nearly flat
    assert learning_rate(200_000, config) == pytest.approx(8e-5) == learning_rate(300_000, config)


def test_decay_groups_follow_lavis_names_and_skip_frozen_parameters():
    """LAVIS: no decay when ``p.ndim < 2 or "bias" in n or "ln" in n or "bn" in n``; frozen parameters are left out."""
    model = torch.nn.Module()
    for name, shape, trainable in (("table", (2, 3), True), ("ln_scale", (2, 3), True), ("bn_scale", (2, 3), True),
                                   ("bias_table", (2, 3), True), ("gain", (3,), True), ("frozen", (2, 3), False),
                                   ("frozen_gain", (3,), False)):
        model.register_parameter(name, torch.nn.Parameter(torch.zeros(shape), requires_grad=trainable))
    decay, no_decay = parameter_groups(model, 0.25)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in decay["params"]] == ["table"] and decay["weight_decay"] == 0.25
    assert [names[id(p)] for p in no_decay["params"]] == ["ln_scale", "bn_scale", "bias_table", "gain"]
    assert no_decay["weight_decay"] == 0.0


def test_the_optimizer_starts_at_the_step_0_rate_and_steps_move_every_group():
    config = OptimConfig(lr=2e-3, warmup_lr=1e-5, warmup_steps=10, betas=(0.8, 0.99))
    optimizer = make_optimizer(Aligner(4, 8, 2), config)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-5, 1e-5] and optimizer.defaults["betas"] == (0.8, 0.99)
    assert set_learning_rate(optimizer, 5, config) == pytest.approx(1e-5 + (2e-3 - 1e-5) * 5 / 10)
    assert [group["lr"] for group in optimizer.param_groups] == [learning_rate(5, config)] * 2


def test_warmup_from_above_is_capped_at_the_peak_rate():
    """LAVIS ``warmup_lr_schedule``: ``min(max_lr, init_lr + (max_lr - init_lr) * step / max(max_step, 1))``."""
    config = OptimConfig(lr=1e-4, warmup_lr=5e-4, warmup_steps=4, min_lr=1e-5, cosine_steps=100)
    assert [learning_rate(step, config) for step in range(4)] == [1e-4] * 4
    assert learning_rate(4, config) == pytest.approx(9e-5 * 0.5 * (1 + math.cos(math.pi * 0.04)) + 1e-5)
    assert learning_rate(1, OptimConfig(warmup_steps=1)) == pytest.approx(2e-5 * 0.5 * (1 + math.cos(math.pi / 200_000)) + 8e-5)
    assert learning_rate(0, OptimConfig(warmup_steps=1)) == 1e-6  # one warm-up step: the warm-up rate
    assert learning_rate(0, OptimConfig(warmup_steps=0)) == 1e-4  # no warm-up: the cosine from the peak
