"""Shared fixtures: tiny random models (session-scoped) and a real ComfyUI server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.support.comfy_server import ComfyServer
from tests.support.paths import COMFYUI
from tests.support.tiny_comfy import make_tiny_base
from tests.support.tiny_models import make_qwen2vl


@pytest.fixture(scope="session")
def tiny_vlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_qwen2vl(tmp_path_factory.mktemp("models") / "tiny-random-Qwen2-VL")


@pytest.fixture(scope="session")
def tied_vlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2-VL with its head tied to the embeddings, as in Qwen2-VL-2B (the default one is untied, as the 7B)."""
    return make_qwen2vl(tmp_path_factory.mktemp("models") / "tiny-random-Qwen2-VL-tied", tied=True)


@pytest.fixture(scope="session")
def encoder(tiny_vlm_folder: Path):
    from thinkdiff.vlm import QwenVLEncoder

    return QwenVLEncoder.from_folder(tiny_vlm_folder, dtype=torch.float32)


@pytest.fixture(scope="session")
def qwen_tokenizer(encoder):
    return encoder.processor.tokenizer


@pytest.fixture(scope="session")
def comfy(tmp_path_factory: pytest.TempPathFactory):
    """A ComfyUI server process with this pack, the tiny-loader test pack and tiny models."""
    if os.environ.get("THINKDIFF_INPROCESS") == "1":
        pytest.skip("mutation testing: a server process cannot follow mutmut's mutants (tests/inprocess has copies)")
    if not (COMFYUI / "main.py").is_file():
        pytest.fail(f"no ComfyUI tree at {COMFYUI}: run scripts/bootstrap.sh")
    base = make_tiny_base(tmp_path_factory.mktemp("comfy_base"))
    with ComfyServer(base) as server:
        yield server


@pytest.fixture(scope="session")
def object_info(comfy) -> dict:
    return comfy.object_info()
