"""The comfyui backend against a real ComfyUI server with this pack: the shipped in-context workflow, rebuilt for 2 and
4 demo images, run with tiny models (only the loaders swapped, as tests/test_comfyui.py does)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.cobsat.comfy_graph import node_of_type
from evaluation.cobsat.comfyui_backend import SHIPPED_WORKFLOW, ComfyUIBackend
from evaluation.cobsat.generate import generate
from evaluation.cobsat.prompt import thinkdiff_prompt
from evaluation.cobsat.records import image_file, record_file
from tests.support.tiny_comfy import swap_to_tiny
from thinkdiff.errors import ThinkDiffError
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder, VLMRequest

pytestmark = pytest.mark.comfyui


def tiny(graph: dict) -> dict:
    """The tiny models, and the VLM in fp32 as the local reference encoder."""
    graph = swap_to_tiny(graph)
    graph[node_of_type(graph, "ThinkDiffVLMLoader")]["inputs"]["dtype"] = "fp32"
    return graph


@pytest.fixture
def comfy_config(eval_config, comfy):
    def make(*overrides: str):
        return eval_config('generate.backend="comfyui"', f"comfyui.url={json.dumps(comfy.url)}", "generate.max_new_tokens=6",
                           "generate.width=64", "generate.height=64", "generate.steps=2", "generate.min_pixels=3136",
                           "generate.max_pixels=12544", "generate.batch_size=2", "run.tasks=[1]", "run.shots=[2, 4]",
                           "run.samples_per_task=2", *overrides)
    return make


def test_the_graph_is_the_shipped_workflow_with_n_images(comfy_config):
    config = comfy_config()
    backend = ComfyUIBackend(config, tiny)
    for sample in config.samples():
        graph = backend.graph(sample, 7)
        types = [node["class_type"] for node in graph.values()]
        assert types.count("LoadImage") == sample.shot and types.count("ImageBatch") == sample.shot - 1
        encode = graph[node_of_type(graph, "ThinkDiffVLMEncode")]["inputs"]
        assert encode["prompt"] == thinkdiff_prompt(sample) and encode["seed"] == 7 and encode["picture_labels"] == "on"
        assert (encode["max_new_tokens"], encode["min_pixels"], encode["max_pixels"]) == (6, 3136, 12544)
        loads = sorted(node["inputs"]["image"] for node in graph.values() if node["class_type"] == "LoadImage")
        assert loads == sorted(f"cobsat/{Path(path).with_suffix('.png')}" for path in sample.image_inputs)
        assert graph[node_of_type(graph, "KSampler")]["inputs"]["seed"] == 7
        sizes = [node["inputs"]["value"] for node in graph.values() if node["class_type"] == "PrimitiveInt"]
        assert sizes == [64, 64] and "TinyUNETLoader" in types
    assert json.loads(SHIPPED_WORKFLOW.read_text())["nodes"]  # read at run time, never copied


def test_generate_through_the_server(comfy_config, comfy, encoder: QwenVLEncoder, standin: Path):
    """Every image comes back at the configured size; the uploads hold the dataset images' PIL pixels; the VLM's text is
    what the library's encoder writes for the reference prompt, those images and the pixel budget (the server runs the
    same tiny model). Top-p 0.01 keeps
    only the likeliest token: a random model's near-uniform distribution would otherwise turn float noise between two
    processes into different samples."""
    config = comfy_config("generate.top_p=0.01")
    images = generate(config, graph_hook=tiny)
    for sample in config.samples():
        record = json.loads(record_file(images, sample).read_text())
        assert Image.open(image_file(images, sample)).size == (64, 64)
        pictures = [Image.open(standin / path).convert("RGB") for path in sample.image_inputs]
        uploaded = [Image.open(comfy.base / "input" / "cobsat" / Path(path).with_suffix(".png")) for path in sample.image_inputs]
        assert [np.asarray(image).tolist() for image in uploaded] == [np.asarray(image).tolist() for image in pictures]
        request = VLMRequest(thinkdiff_prompt(sample), pictures, "on")
        (answer,) = encoder.encode([request], SamplingOptions(max_new_tokens=6, top_p=0.01, seed=record["seed"]), min_pixels=3136,
                                   max_pixels=12544)
        assert record["vlm_text"] == answer.text
    assert (comfy.base / "output" / "ThinkDiff" / "cobsat" / "shot_4" / "task_1").is_dir()


def test_server_errors_are_reported(comfy_config):
    one = ("run.samples_per_task=1", "run.shots=[2]")
    with pytest.raises(ThinkDiffError, match=r"ComfyUI answered 400 to /prompt: .*UNETLoader: Value not in list: unet_name: "
                                             r"'flux1-dev.safetensors' not in .*set \[comfyui\] vlm"):
        generate(comfy_config(*one), graph_hook=lambda graph: graph)  # the workflow's real model names
    with pytest.raises(ThinkDiffError, match="ComfyUI failed on prompt .*min_pixels <= max_pixels"):
        generate(comfy_config("generate.min_pixels=12544", "generate.max_pixels=3136", *one), graph_hook=tiny)
    with pytest.raises(ThinkDiffError, match="no ComfyUI server at http://127.0.0.1:9"):
        generate(comfy_config('comfyui.url="http://127.0.0.1:9"', *one))
