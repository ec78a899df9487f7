"""End to end in a real ComfyUI 0.3.75 server process with this pack and tiny random models."""

import json

import pytest
from PIL import Image

from tests.support.comfy_server import PACK_NAME
from tests.support.tiny_comfy import TINY_ALIGNER, TINY_VLM, shipped_workflows, tiny_api_graph
from tests.support.tiny_models import make_aligner

pytestmark = pytest.mark.comfyui
THINKDIFF_NODES = ["ThinkDiffVLMLoader", "ThinkDiffVLMEncode", "ThinkDiffAlignerLoader", "ThinkDiffFluxConditioning"]


def think_graph(prompt="Describe a red ball.", images=None, **encode):
    """VLM loader -> encode -> PreviewAny(text), optionally with a LoadImage batch."""
    graph = {
        "1": {"class_type": "ThinkDiffVLMLoader", "inputs": {"model": TINY_VLM, "dtype": "fp32", "device": "default"}},
        "2": {"class_type": "ThinkDiffVLMEncode", "inputs": {
            "vlm": ["1", 0], "prompt": prompt, "seed": 42, "max_new_tokens": 16, "temperature": 0.6, "top_p": 0.9,
            "greedy": False, "stop_at_eos": False, "picture_labels": "auto", "min_pixels": 50176, "max_pixels": 1003520,
            **encode}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }
    if images:
        graph["4"] = {"class_type": "LoadImage", "inputs": {"image": images[0]}}
        graph["2"]["inputs"]["images"] = ["4", 0]
    return graph


def conditioning_graph(aligner=TINY_ALIGNER, text="", clip=True, **encode):
    graph = think_graph(**encode)
    graph["5"] = {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": aligner}}
    graph["6"] = {"class_type": "TinyFluxDualCLIPLoader", "inputs": {"clip_name1": "clip_l-tiny-random.safetensors",
                                                                     "clip_name2": "t5xxl-tiny-random.safetensors"}}
    graph["7"] = {"class_type": "ThinkDiffFluxConditioning", "inputs": {
        "features": ["2", 0], "aligner": ["5", 0], "guidance": 3.5, "text": text, "text_tokens": 128,
        **({"clip": ["6", 0]} if clip else {})}}
    graph["8"] = {"class_type": "TestConditioningInfo", "inputs": {"conditioning": ["7", 0]}}
    return graph


def test_every_node_is_registered(comfy, object_info):
    for node in THINKDIFF_NODES:
        assert node in object_info, node
        assert object_info[node]["python_module"] == f"custom_nodes.{PACK_NAME}"
        assert object_info[node]["category"] == "ThinkDiff"
    assert f"{PACK_NAME} module for custom nodes" not in comfy.log()
    assert object_info["ThinkDiffVLMLoader"]["input"]["required"]["model"][1]["options"] == [TINY_VLM]


def test_workflow_templates_are_served(comfy):
    templates = comfy.get("/workflow_templates")
    assert sorted(templates[PACK_NAME]) == sorted(p.stem for p in shipped_workflows())


@pytest.mark.parametrize("workflow", shipped_workflows(), ids=lambda p: p.stem)
def test_shipped_workflow_runs_and_reuses_the_vlm(comfy, object_info, workflow):
    graph = tiny_api_graph(workflow, object_info)
    result = comfy.run(graph)
    assert result.ok, result.error
    (png,) = result.images()
    expected = graph[next(k for k, n in graph.items() if n["class_type"] == "EmptySD3LatentImage")]["inputs"]["width"]
    assert Image.open(png).size == (expected, expected)
    encode_id = next(k for k, n in graph.items() if n["class_type"] == "ThinkDiffVLMEncode")
    (text,) = result.texts(encode_id)
    assert text.strip()

    sampler_id = next(k for k, n in graph.items() if n["class_type"] == "KSampler")
    graph[sampler_id]["inputs"]["seed"] += 1
    again = comfy.run(graph)
    assert again.ok, again.error
    assert encode_id in again.cached_nodes and sampler_id not in again.cached_nodes


def test_progress_and_streamed_text(comfy):
    result, events = comfy.run_watching(think_graph(max_new_tokens=12))
    assert result.ok, result.error
    progress = [data["value"] for kind, data in events if kind == "progress" and data.get("node") == "2"]
    assert progress[-1] == 12 and progress == sorted(progress)
    streamed = [text for kind, data in events if kind == "progress_text" for node, text in [data] if node == "2"]
    assert len(streamed) == 12
    assert streamed[-1] == result.texts("3")[0]


def test_cancel_stops_generation(comfy):
    interrupted = []

    def interrupt_early(kind, data):
        if kind == "progress" and data.get("node") == "2" and data["value"] >= 3 and not interrupted:
            interrupted.append(data["value"])
            comfy.post("/interrupt", {})

    result, events = comfy.run_watching(think_graph(max_new_tokens=2048, seed=1), interrupt_early)
    assert interrupted and not result.ok
    assert result.messages("execution_interrupted")
    last = max(data["value"] for kind, data in events if kind == "progress" and data.get("node") == "2")
    assert last < 2048


def test_conditioning_replaces_t5_with_aligned_tokens(comfy):
    result = comfy.run(conditioning_graph(max_new_tokens=20))
    assert result.ok, result.error
    (info,) = [json.loads(t) for t in result.texts("8")]
    assert info["cond"] == [1, 20, 32] and info["pooled_output"] == [1, 32] and info["guidance"] == 3.5


def test_conditioning_without_clip_has_zero_pooled(comfy):
    result = comfy.run(conditioning_graph(clip=False, max_new_tokens=5))
    assert result.ok, result.error
    assert json.loads(result.texts("8")[0])["pooled_output"] == [1, 768]


def test_conditioning_appends_text_tokens(comfy):
    result = comfy.run(conditioning_graph(text="a photo of a red ball", max_new_tokens=20))
    assert result.ok, result.error
    assert json.loads(result.texts("8")[0])["cond"] == [1, 20 + 128, 32]


@pytest.mark.parametrize(("graph", "message"), [
    (lambda: think_graph(prompt="<image> and <image>", images=["thinkdiff_dots.png"]), "2 <image> placeholder"),
    (lambda: think_graph(prompt="   "), "no text"),
    (lambda: conditioning_graph(text="extra", clip=False), "no CLIP is connected"),
    (lambda: conditioning_graph(aligner="wrong-width.safetensors"), "expects 48"),
])
def test_bad_input_is_reported_on_the_node_and_loses_nothing(comfy, graph, message):
    make_aligner(comfy.base / "models" / "thinkdiff" / "wrong-width.safetensors", in_dim=48)
    result = comfy.run(graph())
    assert not result.ok and message in result.error
    assert comfy.run(think_graph(seed=123)).ok  # the server and the loaded models still work
