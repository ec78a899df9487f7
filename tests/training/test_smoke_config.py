"""training/configs/smoke.toml as a user runs it (the three commands of its header), on the tiny models: only the paths
are redirected, every other setting is the file's; the exported aligner then conditions Flux in a real ComfyUI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.support.paths import REPO
from tests.support.tiny_comfy import TINY_VLM
from tests.test_comfyui import conditioning_graph, saved, tiny_aligner
from tests.training.conftest import make_t5
from training.__main__ import main as cli
from training.config import load_config

pytestmark = pytest.mark.comfyui
SMOKE = REPO / "training" / "configs" / "smoke.toml"
FLUX_T5_WIDTH = 32  # the tiny Flux's T5: the smoke aligner is trained against a T5 of that width to feed it


def test_the_smoke_config_is_a_minutes_long_cpu_run():
    config = load_config(SMOKE)
    assert (config.run.variant, config.run.mixed_precision, config.precompute.dtype, config.model.t5_dtype) == (
        "lvlm", "no", "fp32", "fp32")
    assert (config.batch_size, config.max_steps, config.precompute.max_new_tokens) == (4, 20, 16)


def test_the_smoke_run_trains_and_its_aligner_conditions_flux_in_comfyui(comfy, photo_set: Path, tmp_path: Path):
    t5 = make_t5(tmp_path / "t5", d_model=FLUX_T5_WIDTH, d_kv=8, d_ff=64)
    paths = {"precompute.vlm": comfy.base / "models" / "LLM" / TINY_VLM, "model.t5": t5,
             "data.captions": photo_set / "captions.jsonl", "run.output_dir": tmp_path / "run",
             "precompute.features_dir": tmp_path / "features"}
    overrides = [argument for key, path in paths.items() for argument in ("--set", f"{key}={json.dumps(str(path))}")]
    exported = comfy.base / "models" / "thinkdiff" / "smoke_lvlm.safetensors"
    for command in (["precompute"], ["align"], ["export", "--output", str(exported)]):
        assert cli([*command, "--config", str(SMOKE), *overrides]) == 0
    with (tmp_path / "run" / "metrics.csv").open() as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(1, 21))  # the file's 20 steps, logged each

    graph = conditioning_graph(aligner=exported.name, max_new_tokens=5, seed=3)
    graph["9"] = {"class_type": "TestSaveFeatures", "inputs": {"features": ["2", 0], "filename_prefix": "smoke_features"}}
    result = comfy.run(graph)
    assert result.ok, result.error
    features, cond = saved(comfy, "smoke_features")["features"], saved(comfy, "lvlm")["0.cond"]
    with torch.inference_mode():
        torch.testing.assert_close(cond[0], tiny_aligner(comfy, exported.name)(features), rtol=1e-5, atol=1e-6)
