"""End to end in a real ComfyUI server process (0.33 or 0.3.75, see tests/support/paths.py) with this pack and tiny random models."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.support.comfy_server import PACK_NAME
from tests.support.tiny_comfy import (
    TINY_ALIGNER,
    TINY_CLIP_ALIGNER,
    TINY_VISION,
    TINY_VLM,
    WORKFLOWS,
    is_video,
    of_type,
    shrink_video,
    tiny_api_graph,
)
from tests.support.tiny_diffusers import tiny_cogvideox_frames
from tests.support.tiny_models import make_aligner
from thinkdiff.doctor import shipped_workflows
from thinkdiff.workflow_api import VIRTUAL_NODES

pytestmark = pytest.mark.comfyui
THINKDIFF_NODES = ["ThinkDiffVLMLoader", "ThinkDiffVLMEncode", "ThinkDiffAlignerLoader", "ThinkDiffFluxConditioning",
                   "ThinkDiffVisionLoader", "ThinkDiffImageEncode", "ThinkDiffCLIPFluxConditioning",
                   "ThinkDiffCogVideoXConditioning", "ThinkDiffCogVideoXWrapperEmbeds"]
TINY_CLIP = {"class_type": "TinyFluxDualCLIPLoader", "inputs": {"clip_name1": "clip_l-tiny-random.safetensors",
                                                                "clip_name2": "t5xxl-tiny-random.safetensors"}}


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
    graph["6"] = TINY_CLIP
    graph["7"] = {"class_type": "ThinkDiffFluxConditioning", "inputs": {
        "features": ["2", 0], "aligner": ["5", 0], "guidance": 3.5, "text": text, "text_tokens": 128,
        **({"clip": ["6", 0]} if clip else {})}}
    graph["8"] = {"class_type": "TestConditioningInfo", "inputs": {"conditioning": ["7", 0], "filename_prefix": "lvlm"}}
    return graph


def clip_graph(node: str, images=("thinkdiff_dots.png",), text="a dog", prefix="", **inputs):
    """Vision loader -> image encode -> a ThinkDiff-CLIP conditioning node -> TestConditioningInfo (every output)."""
    graph = {
        "1": {"class_type": "ThinkDiffVisionLoader", "inputs": {"vision_name": TINY_VISION, "dtype": "fp32", "device": "default"}},
        "3": {"class_type": "ThinkDiffImageEncode", "inputs": {"vision": ["1", 0], "images": ["10", 0]}},
        "5": {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": TINY_CLIP_ALIGNER}},
        "6": TINY_CLIP,
        "7": {"class_type": node, "inputs": {"image_tokens": ["3", 0], "aligner": ["5", 0], "clip": ["6", 0], "text": text,
                                             **inputs}},
    }
    for index, image in enumerate(images):
        graph[str(10 + index)] = {"class_type": "LoadImage", "inputs": {"image": image}}
    for index in range(1, len(images)):
        graph[f"2{index}"] = {"class_type": "ImageBatch", "inputs": {"image1": ["10" if index == 1 else f"2{index - 1}", 0],
                                                                      "image2": [str(10 + index), 0]}}
    if len(images) > 1:
        graph["3"]["inputs"]["images"] = [f"2{len(images) - 1}", 0]
    flux = node == "ThinkDiffCLIPFluxConditioning"
    if flux:
        graph["7"]["inputs"].update({"guidance": 3.5, "text_tokens": 128, **inputs})
    outputs = 1 if flux else 2
    for slot in range(outputs):
        graph[f"8{slot}"] = {"class_type": "TestConditioningInfo",
                             "inputs": {"conditioning": ["7", slot],
                                        "filename_prefix": f"{prefix or f'{node}_{len(images)}'}_{slot}"}}
    return graph


def needs_missing_feature(workflow: Path, object_info: dict) -> str:
    """Why this ComfyUI cannot run a UI ``workflow`` (a node type or combo value it does not have), or ''."""
    for node in json.loads(workflow.read_text())["nodes"]:
        if node["type"] not in object_info and node["type"] not in VIRTUAL_NODES:
            return f"this ComfyUI has no {node['type']} node (native CogVideoX needs ComfyUI 0.21+)"
        if node["type"] == "CLIPLoader" and node["widgets_values"][1] not in object_info["CLIPLoader"]["input"]["required"]["type"][0]:
            return f"this ComfyUI has no CLIPLoader type {node['widgets_values'][1]!r} (native CogVideoX needs ComfyUI 0.21+)"
    return ""


def value(graph: dict, reference) -> object:
    """An input's value, following a link to a primitive node (the workflows' width/height Int nodes)."""
    return graph[reference[0]]["inputs"]["value"] if isinstance(reference, list) else reference


def ancestors(graph: dict, *node_ids: str) -> dict:
    """The part of ``graph`` the given nodes depend on (themselves included)."""
    keep, todo = set(), list(node_ids)
    while todo:
        node_id = todo.pop()
        if node_id not in keep:
            keep.add(node_id)
            todo += [v[0] for v in graph[node_id]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return {k: graph[k] for k in keep}


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
def test_shipped_workflow_runs(comfy, object_info, workflow):
    missing = needs_missing_feature(workflow, object_info)
    if missing:
        pytest.skip(missing)
    graph = tiny_api_graph(workflow, object_info)
    video = is_video(graph)
    result = comfy.run(shrink_video(graph) if video else graph)
    assert result.ok, result.error
    (output,) = result.images()
    if video:  # 9 frames decoded by ComfyUI's own (tiny) CogVideoX VAE, written as an animated WebP
        animation = Image.open(output)
        assert (animation.n_frames, animation.size) == (9, (64, 64))
    else:
        latent = graph[of_type(graph, "EmptySD3LatentImage")]["inputs"]
        assert Image.open(output).size == (value(graph, latent["width"]), value(graph, latent["height"]))
    vlm_id = next((k for k, n in graph.items() if n["class_type"] == "ThinkDiffVLMEncode"), None)
    if vlm_id:  # the VLM's thought is shown, and a new sampler seed reuses it instead of thinking again
        (text,) = result.texts(vlm_id)
        assert text.strip()
        sampler_id = of_type(graph, "KSampler")
        graph[sampler_id]["inputs"]["seed"] += 1
        again = comfy.run(graph)
        assert again.ok, again.error
        assert vlm_id in again.cached_nodes and sampler_id not in again.cached_nodes


def sampled_sigmas(comfy, graph: dict, model: list, scheduler: str, steps: int, denoise: float = 1.0) -> list[float]:
    """The sigmas ComfyUI's BasicScheduler gives for ``model`` (a link in ``graph``), from the real server."""
    probe = {**graph, "900": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": scheduler, "steps": steps,
                                                                          "denoise": denoise}},
             "901": {"class_type": "TestSigmas", "inputs": {"sigmas": ["900", 0]}}}
    result = comfy.run(ancestors(probe, "901"))
    assert result.ok, result.error
    return json.loads(result.texts("901")[0])


FLUX_WORKFLOWS = [w for w in shipped_workflows() if "EmptySD3LatentImage" in w.read_text()]


@pytest.mark.parametrize("workflow", FLUX_WORKFLOWS, ids=lambda p: p.stem)
def test_flux_workflows_sample_diffusers_flux_schedule(comfy, object_info, workflow):
    """diffusers' FluxPipeline: FlowMatchEuler sigmas linspace(1, 1/28, 28) shifted by mu = calculate_shift((H/16)(W/16)).
    ComfyUI tabulates the schedule at 10,000 points, so its sigmas differ from the exact ones by at most ~3e-4; without
    ModelSamplingFlux (a fixed shift of 1.15) a 512x512 schedule differs by up to 0.13."""
    graph = tiny_api_graph(workflow, object_info)
    sampler = graph[of_type(graph, "KSampler")]["inputs"]
    latent = graph[of_type(graph, "EmptySD3LatentImage")]["inputs"]
    width, height = value(graph, latent["width"]), value(graph, latent["height"])
    sigmas = sampled_sigmas(comfy, graph, sampler["model"], sampler["scheduler"], sampler["steps"], sampler["denoise"])
    expected = diffusers_flux_sigmas(width, height, sampler["steps"])
    assert len(sigmas) == len(expected) == sampler["steps"] + 1
    np.testing.assert_allclose(sigmas, expected, atol=4e-4, rtol=0)


def diffusers_flux_sigmas(width: int, height: int, steps: int) -> np.ndarray:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    mu = calculate_shift((height // 16) * (width // 16), 256, 4096, 0.5, 1.15)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler.sigmas.double().numpy()


@pytest.mark.parametrize(("width", "expected_mu"), [(512, 0.63), (1024, 1.15)])
def test_the_reference_shift_at_the_papers_sizes(width, expected_mu):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    assert calculate_shift((width // 16) ** 2, 256, 4096, 0.5, 1.15) == pytest.approx(expected_mu, abs=0.005)


def diffusers_cogvideox_sigmas(steps: int) -> np.ndarray:
    """CogVideoX-5b's scheduler (its scheduler_config.json): DDIM, v-prediction, zero terminal SNR, scaled-linear betas
    0.00085..0.012, trailing spacing; sigma = sqrt((1 - alpha_bar) / alpha_bar) at each timestep, then 0."""
    from diffusers import CogVideoXDDIMScheduler

    scheduler = CogVideoXDDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                       prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
                                       snr_shift_scale=1.0, steps_offset=0, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    alpha_bar = scheduler.alphas_cumprod[scheduler.timesteps].double()
    return np.append(((1 - alpha_bar) / alpha_bar).sqrt().numpy(), 0.0)


def test_cogvideox_workflow_samples_diffusers_trailing_schedule(comfy, object_info):
    """50 steps on the shipped workflow's model and scheduler equal diffusers' trailing timesteps. diffusers' first sigma is
    infinite (alpha_bar = 0 at t = 999); ComfyUI clamps that one alpha_bar to 4.9e-8, sigma 4518.8."""
    missing = needs_missing_feature(WORKFLOWS / "thinkdiff_clip_cogvideox.json", object_info)
    if missing:
        pytest.skip(missing)
    graph = tiny_api_graph(WORKFLOWS / "thinkdiff_clip_cogvideox.json", object_info)
    scheduler = graph[of_type(graph, "BasicScheduler")]["inputs"]
    assert (scheduler["scheduler"], scheduler["steps"], scheduler["denoise"]) == ("simple", 50, 1.0)
    sigmas = sampled_sigmas(comfy, graph, scheduler["model"], scheduler["scheduler"], scheduler["steps"])
    expected = diffusers_cogvideox_sigmas(50)
    assert len(sigmas) == len(expected) == 51
    assert np.isinf(expected[0]) and sigmas[0] == pytest.approx((1 / 4.8973451890853435e-08 - 1) ** 0.5, rel=1e-5)
    np.testing.assert_allclose(sigmas[1:], expected[1:], rtol=2e-5)
    assert graph[of_type(graph, "SamplerCustomAdvanced")]["inputs"]["sampler"][0] == of_type(graph, "VOIDSampler")


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


def test_models_live_in_comfyuis_memory_manager(comfy):
    """The VLM and the aligner are ModelPatchers in current_loaded_models, so Unload Models (POST /free) frees them."""
    graph = conditioning_graph(max_new_tokens=4, seed=7)
    graph["9"] = {"class_type": "TestLoadedModels", "inputs": {"after": ["7", 0]}}
    result = comfy.run(graph)
    assert result.ok, result.error
    assert {"QwenVLEncoder", "Aligner"} <= set(result.texts("9"))
    comfy.post("/free", {"unload_models": True})
    deadline = time.time() + 30
    while {"QwenVLEncoder", "Aligner"} & set(loaded := comfy.run(graph).texts("9")) and time.time() < deadline:
        time.sleep(0.5)  # the prompt worker applies /free between prompts
    assert not {"QwenVLEncoder", "Aligner"} & set(loaded)


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


@pytest.mark.parametrize(("images", "tokens"), [(1, 65 + 128), (2, 65 + 65 + 128)])
def test_clip_flux_conditioning(comfy, images, tokens):
    result = comfy.run(clip_graph("ThinkDiffCLIPFluxConditioning", images=["thinkdiff_dots.png", "thinkdiff_blue_ball.png"][:images]))
    assert result.ok, result.error
    info = json.loads(result.texts("80")[0])
    assert info["cond"] == [1, tokens, 32] and info["pooled_output"] == [1, 32] and info["guidance"] == 3.5


def test_clip_text_tokens_follow_the_image_tokens_and_set_the_pooled_vector(comfy):
    """Reference: [aligned image (65), T5(text) (128)] and pooled = CLIP-L(text)."""
    runs = {}
    for text in ("a dog", "a watercolor cat"):
        assert comfy.run(clip_graph("ThinkDiffCLIPFluxConditioning", text=text, prefix=text)).ok
        runs[text] = load_file(comfy.base / "output" / f"{text}_0.safetensors")
    dog, cat = runs["a dog"], runs["a watercolor cat"]
    assert torch.equal(dog["0.cond"][:, :65], cat["0.cond"][:, :65])
    assert not torch.equal(dog["0.cond"][:, 65:], cat["0.cond"][:, 65:])
    assert not torch.equal(dog["0.pooled_output"], cat["0.pooled_output"])


def test_native_cogvideox_needs_a_newer_comfyui(comfy, object_info):
    if "cogvideox" in object_info["CLIPLoader"]["input"]["required"]["type"][0]:
        pytest.skip("this ComfyUI has native CogVideoX")
    result = comfy.run(clip_graph("ThinkDiffCogVideoXConditioning", negative_text="", total_tokens=226))
    assert not result.ok and "no native CogVideoX" in result.error and "Wrapper" in result.error


def test_cogvideox_wrapper_embeds_drive_a_diffusers_pipeline(comfy):
    """The bare (1, 226, D) tensors are accepted by a tiny random diffusers CogVideoXPipeline (prompt_embeds path)."""
    result = comfy.run(clip_graph("ThinkDiffCogVideoXWrapperEmbeds", negative_text="blurry", total_tokens=226))
    assert result.ok, result.error
    positive = load_file(comfy.base / "output" / "ThinkDiffCogVideoXWrapperEmbeds_1_0.safetensors")["0.cond"]
    negative = load_file(comfy.base / "output" / "ThinkDiffCogVideoXWrapperEmbeds_1_1.safetensors")["0.cond"]
    assert positive.shape == negative.shape == (1, 226, 32)
    assert json.loads(result.texts("80")[0])["bare_tensor"] is True
    frames = tiny_cogvideox_frames(positive, negative)
    assert frames.shape == (1, 9, 16, 16, 3) and torch.isfinite(torch.from_numpy(frames)).all()


def test_cogvideox_too_many_images(comfy):
    result = comfy.run(clip_graph("ThinkDiffCogVideoXWrapperEmbeds", images=["thinkdiff_dots.png"] * 4, negative_text="",
                                  total_tokens=226))
    assert not result.ok and "leaving no room for text" in result.error
