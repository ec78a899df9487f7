"""End to end in a real ComfyUI server process (0.33 or 0.3.75, see tests/support/paths.py) with this pack and tiny random models."""

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer

from tests.support.comfy_server import PACK_NAME
from tests.support.paths import T5_TOKENIZER
from tests.support.tiny_comfy import (
    TINY_ALIGNER,
    TINY_CLIP_ALIGNER,
    TINY_VISION,
    TINY_VLM,
    WORKFLOWS,
    at_cpu_size,
    is_video,
    node_types,
    of_type,
    tiny_api_graph,
    value,
)
from tests.support.tiny_diffusers import tiny_cogvideox_frames
from tests.support.tiny_models import BITSANDBYTES_ON_CPU, make_aligner
from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import load_aligner_weights
from thinkdiff.doctor import shipped_workflows
from thinkdiff.vision import VisionTokenEncoder
from thinkdiff.vlm import QwenVLEncoder
from thinkdiff.weight_formats import is_bitsandbytes
from thinkdiff.workflow_api import VIRTUAL_NODES, ui_to_api

pytestmark = pytest.mark.comfyui
THINKDIFF_NODES = ["ThinkDiffVLMLoader", "ThinkDiffVLMEncode", "ThinkDiffAlignerLoader", "ThinkDiffFluxConditioning",
                   "ThinkDiffVisionLoader", "ThinkDiffImageEncode", "ThinkDiffCLIPFluxConditioning",
                   "ThinkDiffCogVideoXConditioning", "ThinkDiffCogVideoXWrapperEmbeds", "ThinkDiffT5Conditioning",
                   "ThinkDiffCLIPT5Conditioning"]
TINY_CLIP = {"class_type": "TinyFluxDualCLIPLoader", "inputs": {"clip_name1": "clip_l-tiny-random.safetensors",
                                                                "clip_name2": "t5xxl-tiny-random.safetensors"}}


def think_graph(prompt="Describe a red ball.", images=None, model=TINY_VLM, weights="default", **encode):
    """VLM loader -> encode -> PreviewAny(text), optionally with a LoadImage batch."""
    graph = {
        "1": {"class_type": "ThinkDiffVLMLoader", "inputs": {"model": model, "dtype": "fp32", "device": "default",
                                                             "weights": weights}},
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


def clip_graph(node: str, images=("thinkdiff_dots.png",), text="a dog", prefix="", vision=TINY_VISION, aligner=TINY_CLIP_ALIGNER,
               **inputs):
    """Vision loader -> image encode -> a ThinkDiff-CLIP conditioning node -> TestConditioningInfo (every output)."""
    graph = {
        "1": {"class_type": "ThinkDiffVisionLoader", "inputs": {"vision_name": vision, "dtype": "fp32", "device": "default"}},
        "3": {"class_type": "ThinkDiffImageEncode", "inputs": {"vision": ["1", 0], "images": ["10", 0]}},
        "5": {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": aligner}},
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


# Saved workflows store widget values by position: each node's inputs in this order, new ones only ever appended
# (0.2 appended the VLM loader's weights). Changing this list means breaking users' workflows.
INPUT_ORDER = {
    "ThinkDiffVLMLoader": ["model", "dtype", "device", "weights"],
    "ThinkDiffVLMEncode": ["vlm", "prompt", "seed", "max_new_tokens", "temperature", "top_p", "greedy", "stop_at_eos",
                           "picture_labels", "min_pixels", "max_pixels", "images"],
    "ThinkDiffAlignerLoader": ["aligner_name"],
    "ThinkDiffFluxConditioning": ["features", "aligner", "guidance", "text", "text_tokens", "clip"],
    "ThinkDiffVisionLoader": ["vision_name", "dtype", "device"],
    "ThinkDiffImageEncode": ["vision", "images"],
    "ThinkDiffCLIPFluxConditioning": ["image_tokens", "aligner", "clip", "text", "guidance", "text_tokens"],
    "ThinkDiffCogVideoXConditioning": ["image_tokens", "aligner", "clip", "text", "negative_text", "total_tokens"],
    "ThinkDiffCogVideoXWrapperEmbeds": ["image_tokens", "aligner", "clip", "text", "negative_text", "total_tokens"],
    "ThinkDiffT5Conditioning": ["features", "aligner", "clip", "text"],
    "ThinkDiffCLIPT5Conditioning": ["image_tokens", "aligner", "clip", "text"],
}


def test_node_inputs_keep_their_order(object_info):
    for node, order in INPUT_ORDER.items():
        listed = object_info[node]["input_order"]
        assert listed.get("required", []) + listed.get("optional", []) == order, node


def test_a_text_encoder_of_the_wrong_kind_is_named(comfy, object_info):
    """CogVideoX's T5 (no CLIP-L) on a Flux conditioning node: the pooled CLIP-L vector cannot be made."""
    if "TinyCogVideoXCLIPLoader" not in object_info:
        pytest.skip("this ComfyUI has no native CogVideoX (0.21+)")
    graph = conditioning_graph(max_new_tokens=3)
    graph["6"] = {"class_type": "TinyCogVideoXCLIPLoader", "inputs": {"clip_name": "t5xxl-tiny-random.safetensors"}}
    result = comfy.run(graph)
    assert not result.ok and "it is not a Flux text encoder: load clip_l + t5xxl with DualCLIPLoader (type: flux)" in result.error


def test_workflow_templates_are_served(comfy):
    templates = comfy.get("/workflow_templates")
    assert sorted(templates[PACK_NAME]) == sorted(p.stem for p in shipped_workflows())


SEEDS = {"KSampler": "seed", "RandomNoise": "noise_seed"}  # where a workflow's sampling seed is


@pytest.mark.parametrize("workflow", shipped_workflows(), ids=lambda p: p.stem)
def test_shipped_workflow_runs(comfy, object_info, workflow):
    """Every shipped workflow, its model loaders swapped for tiny models, at a CPU size (64 px, 9 frames, 2 steps): an
    image of the latent's size, or a video of the frames the latent holds (decoded by the model's own tiny VAE)."""
    missing = needs_missing_feature(workflow, object_info)
    if missing:
        pytest.skip(missing)
    graph = at_cpu_size(tiny_api_graph(workflow, object_info))
    result = comfy.run(graph)
    assert result.ok, result.error
    (output,) = result.images()
    if is_video(graph):  # 9 frames (CogVideoX: 4x temporal, LTX-Video: 8x; both 1 + k frames) written as an animated WebP
        animation = Image.open(output)
        assert (animation.n_frames, animation.size) == (9, (64, 64))
    else:
        latent = graph[of_type(graph, "EmptySD3LatentImage")]["inputs"]
        assert Image.open(output).size == (value(graph, latent["width"]), value(graph, latent["height"])) == (64, 64)
    vlm_id = next((k for k, n in graph.items() if n["class_type"] == "ThinkDiffVLMEncode"), None)
    if vlm_id:  # the VLM's thought is shown, and a new sampler seed reuses it instead of thinking again
        (text,) = result.texts(vlm_id)
        assert text.strip()
        (seed_id,) = [k for k, n in graph.items() if n["class_type"] in SEEDS]
        graph[seed_id]["inputs"][SEEDS[graph[seed_id]["class_type"]]] += 1
        again = comfy.run(graph)
        assert again.ok, again.error
        assert vlm_id in again.cached_nodes and seed_id not in again.cached_nodes


def sampled_sigmas(comfy, graph: dict, model: list, scheduler: str, steps: int, denoise: float = 1.0) -> list[float]:
    """The sigmas ComfyUI's BasicScheduler gives for ``model`` (a link in ``graph``), from the real server."""
    probe = {**graph, "900": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": scheduler, "steps": steps,
                                                                          "denoise": denoise}},
             "901": {"class_type": "TestSigmas", "inputs": {"sigmas": ["900", 0]}}}
    result = comfy.run(ancestors(probe, "901"))
    assert result.ok, result.error
    return json.loads(result.texts("901")[0])


FLUX_WORKFLOWS = [w for w in shipped_workflows() if "ModelSamplingFlux" in node_types(w)]  # Flux.1-dev and Chroma


@pytest.mark.parametrize("workflow", FLUX_WORKFLOWS, ids=lambda p: p.stem)
def test_flux_workflows_sample_diffusers_flux_schedule(comfy, object_info, workflow):
    """diffusers' FluxPipeline and ChromaPipeline: FlowMatchEuler sigmas linspace(1, 1/N, N) shifted by
    mu = calculate_shift((H/16)(W/16)) (Chroma: with Flux's constants, as its pipeline's defaults and Flux.1-dev's scheduler
    config; Chroma1-HD's own scheduler_config.json could not be read here). ComfyUI tabulates the schedule at 10,000
    points, so its sigmas differ from the exact ones by at most ~3e-4; without ModelSamplingFlux (a fixed shift of 1.15)
    a 512x512 schedule differs by up to 0.13."""
    graph = tiny_api_graph(workflow, object_info)
    sampler = graph[of_type(graph, "KSampler")]["inputs"]
    latent = graph[of_type(graph, "EmptySD3LatentImage")]["inputs"]
    shift = graph[of_type(graph, "ModelSamplingFlux")]["inputs"]
    assert all(isinstance(latent[k], list) and shift[k] == latent[k] for k in ("width", "height"))  # one source for both
    width, height = value(graph, latent["width"]), value(graph, latent["height"])
    sigmas = sampled_sigmas(comfy, graph, sampler["model"], sampler["scheduler"], sampler["steps"], sampler["denoise"])
    expected = diffusers_flux_sigmas(width, height, sampler["steps"])
    assert len(sigmas) == len(expected) == sampler["steps"] + 1
    np.testing.assert_allclose(sigmas, expected, atol=4e-4, rtol=0)


PAPERS_THINKING = {"max_new_tokens": 128, "temperature": 0.6, "top_p": 0.9, "greedy": False, "stop_at_eos": False,
                   "min_pixels": 3136, "max_pixels": 12845056}  # vLLM's sampling and Qwen2-VL's processor defaults (issue 9)


def test_the_vlm_thinks_with_the_papers_settings_by_default(object_info):
    encode = object_info["ThinkDiffVLMEncode"]["input"]["required"]
    assert {name: encode[name][1]["default"] for name in PAPERS_THINKING} == PAPERS_THINKING


@pytest.mark.parametrize("workflow", [w for w in shipped_workflows() if "ThinkDiffVLMEncode" in w.read_text()],
                         ids=lambda p: p.stem)
def test_lvlm_workflows_think_with_the_papers_settings(object_info, workflow):
    """The image + extra-text demo (..._flux_multi_image_input.py) gives Qwen the image alone at max_pixels 65,536 and
    its text to Flux's T5; the other LVLM workflows use the paper's settings unchanged (read from the ThinkDiff nodes, so
    also where this ComfyUI lacks a workflow's sampling nodes)."""
    ui = json.loads(workflow.read_text())
    graph = ui_to_api({**ui, "nodes": [n for n in ui["nodes"] if n["type"].startswith("ThinkDiff")]}, object_info)
    encode = graph[of_type(graph, "ThinkDiffVLMEncode")]["inputs"]
    expected = dict(PAPERS_THINKING)
    if workflow.stem == "thinkdiff_lvlm_image_plus_text":
        expected["max_pixels"] = 65536
        assert encode["prompt"] == ""
        assert graph[of_type(graph, "ThinkDiffFluxConditioning")]["inputs"]["text"] == "Reconstruct the texts in this image."
    assert {name: encode[name] for name in expected} == expected


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


@pytest.mark.parametrize("workflow", [w for w in shipped_workflows() if "VOIDSampler" in node_types(w)], ids=lambda p: p.stem)
def test_cogvideox_workflow_samples_diffusers_trailing_schedule(comfy, object_info, workflow):
    """50 steps on the shipped workflow's model and scheduler equal diffusers' trailing timesteps. diffusers' first sigma is
    infinite (alpha_bar = 0 at t = 999); ComfyUI clamps that one alpha_bar to 4.9e-8, sigma 4518.8."""
    missing = needs_missing_feature(workflow, object_info)
    if missing:
        pytest.skip(missing)
    graph = tiny_api_graph(workflow, object_info)
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
    assert progress[-1] == 12 and progress == sorted(progress)  # ComfyUI 0.33 throttles progress events; the last one arrives
    texts = streamed(events)
    assert len(texts) == 12 and texts[-1] == result.texts("3")[0]  # one streamed text per token, the last = the answer


def streamed(events: list, node: str = "2") -> list[str]:
    return [text for kind, data in events if kind == "progress_text" for source, text in [data] if source == node]


def test_cancel_from_the_http_api_stops_generation(comfy):
    """POST /interrupt (the Cancel button) while the VLM thinks: the prompt ends interrupted, long before 2048 tokens."""
    sent = []

    def interrupt_early(kind, data):
        if kind == "progress_text" and data[0] == "2" and not sent:
            comfy.post("/interrupt", {})
            sent.append(True)

    result, events = comfy.run_watching(think_graph(max_new_tokens=2048, seed=1), interrupt_early)
    assert sent and not result.ok and result.messages("execution_interrupted")
    assert len(streamed(events)) < 100


@pytest.mark.parametrize(("at", "weights"), [(3, "default"), (7, "default"), (3, "bnb_8bit")])
def test_cancel_takes_effect_at_the_next_token(comfy, at, weights):
    """Cancel pressed right after the ``at``-th token was streamed (the test pack does it in the server, in the generating
    thread): the VLM must stop before streaming another. ComfyUI's cast layers (``default``, fp8) check for Cancel at
    every call; bitsandbytes layers do not, and ComfyUI 0.33 throttles its progress-hook checks to one per 100 ms, so
    there only the node's own per-token check stops it."""
    if is_bitsandbytes(weights) and not BITSANDBYTES_ON_CPU:
        pytest.skip(f"transformers {transformers.__version__} runs bitsandbytes only on GPUs (its refusal is tested below)")
    comfy.post("/thinkdiff_test/interrupt_after", {"texts": at})
    try:
        result, events = comfy.run_watching(think_graph(max_new_tokens=2048, seed=at, weights=weights))
    finally:
        comfy.post("/thinkdiff_test/interrupt_after", {"texts": 0})  # a Cancel that never fired must not hit the next test
    assert not result.ok and result.messages("execution_interrupted")
    assert len(streamed(events)) == at


@pytest.mark.parametrize(("stop_at_eos", "tokens"), [(True, 4), (False, 12)])
def test_stop_at_eos_ends_the_answer_at_the_end_token(comfy, stop_at_eos, tokens):
    """A head pushed to the end token at the 4th token: with stop_at_eos the answer is those 4 tokens (the end token
    last); with the paper's settings the end token is masked and all 12 come."""
    graph = think_graph(max_new_tokens=12, seed=5, stop_at_eos=stop_at_eos)
    graph["20"] = {"class_type": "TestForceEOS", "inputs": {"vlm": ["1", 0], "at": 4}}
    graph["2"]["inputs"]["vlm"] = ["20", 0]
    graph["9"] = {"class_type": "TestSaveFeatures", "inputs": {"features": ["2", 0], "filename_prefix": f"eos_{stop_at_eos}"}}
    result = comfy.run(graph)
    assert result.ok, result.error
    answer = saved(comfy, f"eos_{stop_at_eos}")
    ids = answer["token_ids"].tolist()
    assert len(ids) == answer["features"].shape[0] == tokens
    eos = QwenVLEncoder.from_folder(comfy.base / "models" / "LLM" / TINY_VLM).eos_token_id
    end = {eos} if isinstance(eos, int) else set(eos)
    assert (ids[-1] in end) == stop_at_eos and not set(ids[:-1]) & end


def saved(comfy, prefix: str) -> dict[str, torch.Tensor]:
    return load_file(str(comfy.base / "output" / f"{prefix}.safetensors"))


def tiny_aligner(comfy, name: str = TINY_ALIGNER) -> Aligner:
    """The aligner a loader node reads, built here by the library (its maths is tested against a float64 formula)."""
    return Aligner.from_state_dict(load_aligner_weights(comfy.base / "models" / "thinkdiff" / name).state)


def t5_ids(text: str, length: int) -> str:
    """diffusers' T5 ids: the Hugging Face tokenizer padded / truncated to ``length`` (the end token kept)."""
    return json.dumps(AutoTokenizer.from_pretrained(str(T5_TOKENIZER))(text, padding="max_length", max_length=length,
                                                                      truncation=True).input_ids)


def reference_nodes(graph: dict, clip: str, text: str, length: int, prefix: str) -> dict:
    """Independent references from ComfyUI itself: T5 of diffusers' ids, and CLIPTextEncodeFlux's pooled CLIP-L(text)."""
    return {**graph,
            "50": {"class_type": "TestT5Encode", "inputs": {"clip": [clip, 0], "ids": t5_ids(text, length)}},
            "51": {"class_type": "TestConditioningInfo", "inputs": {"conditioning": ["50", 0], "filename_prefix": f"{prefix}_t5"}},
            "52": {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip": [clip, 0], "clip_l": text, "t5xxl": text, "guidance": 3.5}},
            "53": {"class_type": "TestConditioningInfo", "inputs": {"conditioning": ["52", 0], "filename_prefix": f"{prefix}_l"}}}


@pytest.mark.parametrize("text", ["", "a photo of a red ball"])
def test_lvlm_conditioning_is_the_aligned_features_then_t5_with_clip_l_pooled(comfy, text):
    """Reference (thinkdiff-reference.md 3.5): cond = aligner(features) [+ T5(text, 128)], pooled = CLIP-L(text), guidance."""
    graph = conditioning_graph(text=text, max_new_tokens=9, seed=3)
    graph["9"] = {"class_type": "TestSaveFeatures", "inputs": {"features": ["2", 0], "filename_prefix": "lvlm_features"}}
    result = comfy.run(reference_nodes(graph, "6", text, 128, "lvlm_ref"))
    assert result.ok, result.error
    features = saved(comfy, "lvlm_features")["features"]
    cond, pooled = saved(comfy, "lvlm")["0.cond"], saved(comfy, "lvlm")["0.pooled_output"]
    assert features.shape == (9, 64) and cond.shape == (1, 9 + (128 if text else 0), 32)
    with torch.inference_mode():
        torch.testing.assert_close(cond[0, :9], tiny_aligner(comfy)(features), rtol=1e-5, atol=1e-6)
    if text:
        torch.testing.assert_close(cond[:, 9:], saved(comfy, "lvlm_ref_t5")["0.cond"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled, saved(comfy, "lvlm_ref_l")["0.pooled_output"], rtol=1e-5, atol=1e-6)
    assert json.loads(result.texts("8")[0])["guidance"] == 3.5


@pytest.mark.parametrize("text", ["", "a photo of a red ball"])
def test_a_bf16_vlms_features_are_aligned_in_fp32(comfy, text):
    """A bf16 VLM (the paper's precision, ComfyUI's auto) hands the conditioning node bf16 features; the node's tokens are
    the fp32 aligner of those values (features.float()), to fp32 precision: the aligner's manual-cast layers would
    otherwise cast their weights to bf16 and the tokens would be off by bf16 rounding (~1e-2), not 1e-5."""
    graph = conditioning_graph(text=text, max_new_tokens=9, seed=3)
    graph["1"]["inputs"]["dtype"] = "bf16"
    graph["9"] = {"class_type": "TestSaveFeatures", "inputs": {"features": ["2", 0], "filename_prefix": "bf16_features"}}
    result = comfy.run(reference_nodes(graph, "6", text, 128, "bf16_ref"))
    assert result.ok, result.error
    features, cond = saved(comfy, "bf16_features")["features"], saved(comfy, "lvlm")["0.cond"]
    assert features.shape == (9, 64) and torch.equal(features.bfloat16().float(), features)  # the VLM ran in bf16
    with torch.inference_mode():
        expected = tiny_aligner(comfy)(features)
        in_bf16 = Aligner.from_state_dict({k: v.bfloat16() for k, v in tiny_aligner(comfy).state_dict().items()})(
            features.bfloat16()).float()
    assert cond.dtype == torch.float32 and (in_bf16 - expected).abs().max() > 1e-3  # the tolerance below tells them apart
    torch.testing.assert_close(cond[0, :9], expected, rtol=1e-5, atol=1e-6)
    if text:
        torch.testing.assert_close(cond[:, 9:], saved(comfy, "bf16_ref_t5")["0.cond"], rtol=1e-5, atol=1e-6)


def test_without_a_clip_the_pooled_vector_is_exactly_zero(comfy):
    result = comfy.run(conditioning_graph(clip=False, max_new_tokens=5))
    assert result.ok, result.error
    assert torch.equal(saved(comfy, "lvlm")["0.pooled_output"], torch.zeros(1, 768))


def test_the_vlm_and_aligner_are_evicted_when_another_model_needs_the_memory(comfy):
    """What loading Flux does when memory is short (load_models_gpu -> free_memory): the VLM and the aligner make room."""
    graph = conditioning_graph(max_new_tokens=4, seed=11)
    graph["10"] = {"class_type": "TestFreeMemory", "inputs": {"after": ["7", 0], "gigabytes": 1e6}}
    result = comfy.run(graph)
    assert result.ok, result.error
    before, after = (set(json.loads(text)) for text in result.texts("10"))
    assert {"QwenVLEncoder", "Aligner"} <= before  # loaded by ComfyUI for the think and the alignment
    assert not {"QwenVLEncoder", "Aligner"} & after


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


@pytest.mark.parametrize(("graph", "message"), [
    (lambda: think_graph(prompt="<image> and <image>", images=["thinkdiff_dots.png"]), "2 <image> placeholder"),
    (lambda: think_graph(prompt="   "), "no text"),
    (lambda: conditioning_graph(text="extra", clip=False), "no CLIP is connected"),
    (lambda: conditioning_graph(aligner="wrong-width.safetensors"),
     "expects 48. Use the aligner trained for this encoder (release: thinkdiff_lvlm for Qwen2-VL-7B, 3584 wide; "
     "thinkdiff_clip for BLIP-2's EVA ViT-g, 1408 wide)."),
])
def test_bad_input_is_reported_on_the_node_and_loses_nothing(comfy, graph, message):
    make_aligner(comfy.base / "models" / "thinkdiff" / "wrong-width.safetensors", in_dim=48)
    result = comfy.run(graph())
    assert not result.ok and message in result.error
    assert comfy.run(think_graph(seed=123)).ok  # the server and the loaded models still work


def broken_files(base: Path) -> dict[str, Path]:
    """What users meet after an interrupted download or copy (issue 13), written into the server's models folder."""
    models = base / "models"
    half_copied = models / "LLM" / "half-copied-Qwen2-VL"  # weights and tokenizer, no config.json
    truncated_vlm = models / "LLM" / "truncated-Qwen2-VL"  # complete but for the end of model.safetensors
    shutil.copytree(models / "LLM" / TINY_VLM, half_copied, dirs_exist_ok=True)
    (half_copied / "config.json").unlink()
    shutil.copytree(models / "LLM" / TINY_VLM, truncated_vlm, dirs_exist_ok=True)
    weights = truncated_vlm / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])
    damaged_vision = models / "thinkdiff" / "damaged-vision.safetensors"  # its header is gone
    damaged_vision.write_bytes(b"\x00" * 4096 + (models / "thinkdiff" / TINY_VISION).read_bytes()[4096:])
    truncated_vision = models / "thinkdiff" / "truncated-vision.safetensors"  # its header is intact
    truncated_vision.write_bytes((models / "thinkdiff" / TINY_VISION).read_bytes()[:-2048])
    wide = make_aligner(models / "thinkdiff" / "wide-output-aligner.safetensors", out_dim=48)  # 64 -> 48, T5 is 32
    wide_clip = make_aligner(models / "thinkdiff" / "wide-output-clip-aligner.safetensors", in_dim=48, out_dim=48, variant="clip")
    legacy = models / "thinkdiff" / "legacy-format-aligner.pth"  # a pre-1.6 torch.save file
    torch.save({"model": {k: v for k, v in load_file(str(models / "thinkdiff" / TINY_ALIGNER)).items()}}, legacy,
               _use_new_zipfile_serialization=False)
    return {"half_copied": half_copied, "truncated_vlm": truncated_vlm, "damaged_vision": damaged_vision,
            "truncated_vision": truncated_vision, "wide": wide, "wide_clip": wide_clip, "legacy": legacy}


@pytest.fixture(scope="module")
def broken(comfy):
    files = broken_files(comfy.base)
    yield {name: path.name for name, path in files.items()}
    for path in files.values():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def options(object_info: dict, node: str, name: str) -> list[str]:
    return object_info[node]["input"]["required"][name][1]["options"]


def test_damaged_and_incomplete_models_are_listed_where_users_look_for_them(comfy, broken):
    info = comfy.object_info()
    assert {broken["half_copied"], broken["truncated_vlm"]} <= set(options(info, "ThinkDiffVLMLoader", "model"))
    vision, aligners = options(info, "ThinkDiffVisionLoader", "vision_name"), options(info, "ThinkDiffAlignerLoader", "aligner_name")
    assert broken["truncated_vision"] in vision and broken["truncated_vision"] not in aligners  # its header says "vision"
    assert broken["damaged_vision"] in vision and broken["damaged_vision"] in aligners  # unreadable: shown in both lists
    assert broken["legacy"] in aligners and TINY_VISION not in aligners and TINY_ALIGNER not in vision


@pytest.mark.parametrize(("graph", "message"), [
    (lambda b: think_graph(model=b["half_copied"]), r"half-copied-Qwen2-VL is not a Hugging Face model folder \(no config.json\)"),
    (lambda b: think_graph(model=b["truncated_vlm"]), r"model.safetensors is truncated \([\d,]+ of [\d,]+ bytes.*download "
                                                      r"model.safetensors again from https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct"),
    (lambda b: clip_graph("ThinkDiffCLIPFluxConditioning", vision=b["damaged_vision"]),
     r"damaged-vision.safetensors is not a .safetensors file.*damaged; extract or download it again"),
    (lambda b: clip_graph("ThinkDiffCLIPFluxConditioning", vision=b["truncated_vision"]),
     r"truncated-vision.safetensors is truncated .*extract or download it again"),
    (lambda b: conditioning_graph(aligner=b["wide"]), r"wide-output-aligner.safetensors .* outputs 48-wide tokens but the connected "
                                                      r"T5 is 32 wide, so the diffusion model cannot read them. Use the aligner "
                                                      r"trained for this T5 \(the release aligners output 4096, T5-XXL's width, "
                                                      r"for Flux.1 and CogVideoX\) or connect the text encoder of the model you "
                                                      r"sample with."),
    (lambda b: conditioning_graph(aligner=b["wide"], text="a red ball"), "outputs 48-wide tokens but the connected T5 is 32 wide"),
    (lambda b: clip_graph("ThinkDiffCLIPFluxConditioning", aligner=b["wide_clip"]),
     r"wide-output-clip-aligner.safetensors .* outputs 48-wide tokens but the connected T5 is 32 wide"),
    (lambda b: clip_graph("ThinkDiffCogVideoXWrapperEmbeds", aligner=b["wide_clip"], negative_text="", total_tokens=226),
     r"wide-output-clip-aligner.safetensors .* outputs 48-wide tokens but the connected T5 is 32 wide"),
])
def test_damaged_models_and_wrong_widths_fail_on_their_node_before_sampling(comfy, broken, graph, message):
    result = comfy.run(graph(broken))
    assert not result.ok and re.search(message, result.error), result.error
    failed = result.messages("execution_error")[0]["node_type"]
    assert failed in {"ThinkDiffVLMLoader", "ThinkDiffVisionLoader", "ThinkDiffFluxConditioning", "ThinkDiffCLIPFluxConditioning",
                      "ThinkDiffCogVideoXWrapperEmbeds"}


def test_a_legacy_format_release_aligner_loads(comfy, broken):
    result = comfy.run(conditioning_graph(aligner=broken["legacy"], max_new_tokens=3))
    assert result.ok, result.error
    assert json.loads(result.texts("8")[0])["cond"] == [1, 3, 32]


def image_tokens(comfy, names: list[str]) -> torch.Tensor:
    """The tiny vision tower's tokens of the example images, computed here without ComfyUI: [images, 65, 48]."""
    encoder = VisionTokenEncoder.from_file(comfy.base / "models" / "thinkdiff" / TINY_VISION)
    return encoder.encode([Image.open(WORKFLOWS / "images" / name).convert("RGB") for name in names])


@pytest.mark.parametrize("images", [["thinkdiff_dots.png"], ["thinkdiff_dots.png", "thinkdiff_blue_ball.png"]])
def test_clip_flux_conditioning_is_aligned_image_tokens_then_t5_with_clip_l_pooled(comfy, images):
    """Reference (thinkdiff-reference.md 4.3): [aligner(image 1) 65, aligner(image 2) 65, T5(text, 128)], pooled = CLIP-L(text)."""
    graph = reference_nodes(clip_graph("ThinkDiffCLIPFluxConditioning", images=images, text="a dog", prefix="clip_flux"), "6",
                            "a dog", 128, "clip_ref")
    result = comfy.run(graph)
    assert result.ok, result.error
    out = saved(comfy, "clip_flux_0")
    images_length = 65 * len(images)
    assert out["0.cond"].shape == (1, images_length + 128, 32) and json.loads(result.texts("80")[0])["guidance"] == 3.5
    with torch.inference_mode():
        expected = tiny_aligner(comfy, TINY_CLIP_ALIGNER)(image_tokens(comfy, images)).reshape(1, images_length, 32)
    torch.testing.assert_close(out["0.cond"][:, :images_length], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["0.cond"][:, images_length:], saved(comfy, "clip_ref_t5")["0.cond"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["0.pooled_output"], saved(comfy, "clip_ref_l")["0.pooled_output"], rtol=1e-5, atol=1e-6)


def test_native_cogvideox_conditioning_is_226_tokens_and_a_t5_negative(comfy, object_info):
    """Reference (4.4): positive = [aligner(image) 65, T5(text, 161)], negative = T5("", 226), as CogVideoXPipeline pads."""
    if "TinyCogVideoXCLIPLoader" not in object_info:
        pytest.skip("this ComfyUI has no native CogVideoX (0.21+)")
    graph = clip_graph("ThinkDiffCogVideoXConditioning", text="a panda playing guitar", negative_text="", total_tokens=226,
                       prefix="cogvideox")
    graph["6"] = {"class_type": "TinyCogVideoXCLIPLoader", "inputs": {"clip_name": "t5xxl-tiny-random.safetensors"}}
    for name, text, length in (("60", "a panda playing guitar", 161), ("62", "", 226)):
        graph[name] = {"class_type": "TestT5Encode", "inputs": {"clip": ["6", 0], "ids": t5_ids(text, length)}}
        graph[str(int(name) + 1)] = {"class_type": "TestConditioningInfo",
                                     "inputs": {"conditioning": [name, 0], "filename_prefix": f"cogvideox_ref_{length}"}}
    result = comfy.run(graph)
    assert result.ok, result.error
    positive, negative = saved(comfy, "cogvideox_0")["0.cond"], saved(comfy, "cogvideox_1")["0.cond"]
    assert positive.shape == negative.shape == (1, 226, 32)
    with torch.inference_mode():
        torch.testing.assert_close(positive[:, :65], tiny_aligner(comfy, TINY_CLIP_ALIGNER)(image_tokens(comfy, ["thinkdiff_dots.png"])),
                                   rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(positive[:, 65:], saved(comfy, "cogvideox_ref_161")["0.cond"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(negative, saved(comfy, "cogvideox_ref_226")["0.cond"], rtol=1e-5, atol=1e-6)


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


def vlm_graph(weights: str, prefix: str, seed: int = 5, tokens: int = 6) -> dict:
    """A VLM loader with ``weights`` -> greedy think -> features saved, and what ComfyUI knows of the model."""
    graph = think_graph(seed=seed, max_new_tokens=tokens, greedy=True, weights=weights)
    graph["9"] = {"class_type": "TestSaveFeatures", "inputs": {"features": ["2", 0], "filename_prefix": prefix}}
    graph["10"] = {"class_type": "TestVLMInfo", "inputs": {"vlm": ["1", 0]}}
    return graph


COMFY_CAST = "comfy.ops.manual_cast."


@pytest.mark.parametrize("weights", ["fp8_e4m3fn", "bnb_8bit", "bnb_nf4"])
def test_each_weight_format_thinks_close_to_the_default_and_is_sized_as_stored(comfy, weights):
    if is_bitsandbytes(weights) and not BITSANDBYTES_ON_CPU:  # transformers 4.x: bitsandbytes on a CPU needs Intel's extension
        refused = comfy.run(vlm_graph(weights, f"format_{weights}"))
        assert not refused.ok and f"weights {weights} cannot run on this machine" in refused.error
        assert "Pick fp8_e4m3fn" in refused.error
        return
    default, other = comfy.run(vlm_graph("default", "format_default")), comfy.run(vlm_graph(weights, f"format_{weights}"))
    assert default.ok and other.ok, default.error + other.error
    reference, ours = saved(comfy, "format_default"), saved(comfy, f"format_{weights}")
    # Rows up to the first differing token (that one included) come from the same tokens. The random model's logits have
    # near ties (untied head: 151,936 rows of std 0.02) that a quantized format may flip, after which the answers part.
    differ = (reference["token_ids"] != ours["token_ids"]).nonzero()
    same = int(differ[0]) if len(differ) else len(ours["token_ids"])
    cosine = torch.nn.functional.cosine_similarity(reference["features"], ours["features"], dim=-1)[:same + 1]
    assert cosine.min() > {"fp8_e4m3fn": 0.99, "bnb_8bit": 0.97, "bnb_nf4": 0.9}[weights], (cosine, same)
    default_info, info = (json.loads(r.texts("10")[0]) for r in (default, other))
    # the tiny VLM (fp32) has 14 language-model Linear layers, 2 x (q, k, v, o, gate, up, down), and an untied lm_head
    config = json.loads((comfy.base / "models" / "LLM" / TINY_VLM / "config.json").read_text())
    text = config.get("text_config", config)
    hidden, inner, heads, kv = text["hidden_size"], text["intermediate_size"], text["num_attention_heads"], text["num_key_value_heads"]
    head_dim, vocabulary = hidden // heads, text["vocab_size"]
    assert not config.get("tie_word_embeddings", text.get("tie_word_embeddings"))
    per_layer = 2 * hidden * hidden + 2 * hidden * kv * head_dim + 3 * hidden * inner
    channels = text["num_hidden_layers"] * (3 * hidden + 2 * kv * head_dim + 2 * inner) + vocabulary  # output rows
    linear_weights = text["num_hidden_layers"] * per_layer + vocabulary * hidden
    if weights == "fp8_e4m3fn":  # ComfyUI's size is the stored bytes: 1 instead of 4 per weight, a float32 scale per row
        assert default_info["size"] - info["size"] == 3 * linear_weights - 4 * channels
        assert not [name for name in info["classes"] if name.startswith("torch.nn")]  # every layer streamable
        streamed_fp8 = sum(n for name, n in info["classes"].items() if name.endswith(".StreamedCastLinear"))
        plain = default_info["classes"][COMFY_CAST + "Linear"]
        assert streamed_fp8 == 2 * 7 + 1 and info["classes"][COMFY_CAST + "Linear"] + streamed_fp8 == plain
    else:  # bitsandbytes layers (with the pack's move of their quantized state), loaded whole; smaller than fp32
        assert any(name.endswith((".Linear8bitLt", ".Linear4bit")) for name in info["classes"]), info["classes"]
        assert info["size"] < default_info["size"]


def test_a_vlm_that_does_not_fit_streams_its_layers_through_comfyuis_partial_loading(comfy):
    """ComfyUI's lowvram path with 1 MB resident: the cast layers stay on the offload device and are cast per forward;
    the answer equals the fully loaded one."""
    graph = vlm_graph("fp8_e4m3fn", "full_fp8", seed=4)
    graph["11"] = {"class_type": "TestThinkPartiallyLoaded", "inputs": {"vlm": ["1", 0], "prompt": "Describe a red ball.",
                                                                         "max_new_tokens": 6, "megabytes": 1.0,
                                                                         "filename_prefix": "streamed_fp8"}}
    graph["2"]["inputs"]["greedy"] = True
    result = comfy.run(graph)
    assert result.ok, result.error
    assert json.loads(result.texts("11")[0])["streamed_layers"] > 10
    full, streamed = saved(comfy, "full_fp8"), saved(comfy, "streamed_fp8")
    assert torch.equal(full["token_ids"], streamed["token_ids"])
    torch.testing.assert_close(full["features"], streamed["features"], rtol=1e-4, atol=1e-5)


def test_the_in_context_workflow_runs_with_the_fp8_vlm(comfy, object_info):
    graph = tiny_api_graph(WORKFLOWS / "thinkdiff_lvlm_in_context.json", object_info)
    graph[of_type(graph, "ThinkDiffVLMLoader")]["inputs"]["weights"] = "fp8_e4m3fn"
    result = comfy.run(graph)
    assert result.ok, result.error
    (png,) = result.images()
    assert Image.open(png).size == (512, 512)
