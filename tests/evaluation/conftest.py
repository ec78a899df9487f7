"""Fixtures for the CoBSAT evaluation tests: the synthetic stand-in, a prompt list with hand-made entries, tiny models.

``HAND_ENTRIES`` are the first entries of the test prompt list; their samples are worked out by hand in
test_samples.py. Entry 0 reproduces the protocol's test vector (Color-I, 2-shot: blue, brown -> orange car); the rest
of the list is drawn by ``write_prompt_list``. Nothing here is CoBSAT's own prompt list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState

from evaluation.cobsat.config import EvalConfig, load_config
from evaluation.cobsat.synthetic import write_prompt_list, write_standin
from tests.evaluation.tiny_eval_models import make_clip, make_flux, make_llava
from tests.support.tiny_models import make_aligner

HAND_ENTRIES = [
    {"x_list": [8, 7, 5, 0, 1, 2, 3, 4, 6, 9], "theta_list": [0, 1, 2, 4, 3, 5, 6, 7, 8, 9]},
    {"x_list": [4, 0, 1, 2, 3, 5, 6, 7, 8, 9], "theta_list": [0, 1, 2, 8, 3, 4, 5, 6, 7, 9]},
    {"x_list": [0, 1, 8, 2, 3, 4, 5, 6, 7, 9], "theta_list": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]},
]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """``generate`` reads Accelerate's process state; each test starts from a clean one."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def prompt_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1000 entries like CoBSAT's list: ``HAND_ENTRIES`` first, then seeded permutations."""
    path = write_prompt_list(tmp_path_factory.mktemp("cobsat") / "prompts_list_test.json", seed=1)
    entries = json.loads(path.read_text())
    path.write_text(json.dumps(HAND_ENTRIES + entries[len(HAND_ENTRIES):]))
    return path


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic stand-in's datasets/ folder (500 drawn pictures in CoBSAT's layout)."""
    return write_standin(tmp_path_factory.mktemp("cobsat") / "datasets")


@pytest.fixture
def eval_config(tmp_path: Path, prompt_list: Path, standin: Path):
    """``eval_config(*overrides)``: a run writing under ``tmp_path/run`` on the stand-in, tasks 1-2, 2-shot, 4 samples."""

    def make(*overrides: str) -> EvalConfig:
        base = [f"run.output_dir={json.dumps(str(tmp_path / 'run'))}", "run.tasks=[1, 2]", "run.shots=[2]",
                "run.samples_per_task=4", f"data.prompt_list={json.dumps(str(prompt_list))}",
                f"data.dataset_root={json.dumps(str(standin))}", "generate.progress_every_s=0.0"]
        return load_config(None, base + list(overrides))

    return make


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llava(tmp_path_factory.mktemp("models") / "tiny-random-llava-hf")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("models") / "tiny-random-clip")


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_flux(tmp_path_factory.mktemp("models") / "tiny-random-flux-diffusers")


@pytest.fixture(scope="session")
def tiny_aligner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 (the tiny Qwen2-VL) -> 128 -> 32 (the tiny Flux's joint width)."""
    return make_aligner(tmp_path_factory.mktemp("models") / "tiny-random-aligner.safetensors")
