"""The shipped T5-model workflows sample as their models' diffusers pipelines do: schedules (from the real server) against
the diffusers scheduler configured as its pipeline configures it, and frame counts and rates as the pipelines sample them.

Chroma's schedule is tested with Flux's (tests/test_comfyui.py: same pipeline code), CogVideoX's with the CLIP variant's;
every shipped workflow also runs end to end there (test_shipped_workflow_runs).
"""

import json

import numpy as np
import pytest

from tests.support.tiny_comfy import node_types, of_type, tiny_api_graph
from tests.test_comfyui import ancestors, needs_missing_feature, sampled_sigmas
from thinkdiff.doctor import shipped_workflows
from thinkdiff.workflow_api import ui_to_api

pytestmark = pytest.mark.comfyui
SD35 = [w for w in shipped_workflows() if "ModelSamplingSD3" in node_types(w)]
LTXV = [w for w in shipped_workflows() if "LTXVScheduler" in node_types(w)]


def sd35_sigmas(steps: int) -> np.ndarray:
    """StableDiffusion3Pipeline with SD3.5 Large's scheduler_config.json (FlowMatchEuler, shift 3.0, no dynamic shift):
    retrieve_timesteps(scheduler, steps), as the pipeline calls it."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import retrieve_timesteps

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    retrieve_timesteps(scheduler, steps, "cpu")
    return scheduler.sigmas.double().numpy()


def ltxv_sigmas(width: int, height: int, frames: int, steps: int) -> np.ndarray:
    """LTXPipeline: its scheduler (diffusers' convert_ltx_to_diffusers.py, the 0.9.x repos' scheduler_config.json) with
    mu = calculate_shift(latent frames x (H/32) x (W/32)) on sigmas linspace(1, 1/steps, steps), stretched to 0.1."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift, retrieve_timesteps

    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)
    tokens = ((frames - 1) // 8 + 1) * (height // 32) * (width // 32)
    mu = calculate_shift(tokens, 1024, 4096, 0.95, 2.05)
    retrieve_timesteps(scheduler, steps, "cpu", sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler.sigmas.double().numpy()


@pytest.mark.parametrize("workflow", SD35, ids=lambda p: p.stem)
def test_sd35_workflows_sample_diffusers_sd3_schedule(comfy, object_info, workflow):
    """ModelSamplingSD3 (shift 3) with KSampler's *normal* scheduler gives diffusers' timesteps (linspace between the
    shifted schedule's ends, shifted again) to float32 precision; *simple* would end at 0.10 instead of 0.009."""
    graph = tiny_api_graph(workflow, object_info)
    sampler = graph[of_type(graph, "KSampler")]["inputs"]
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"]) == (28, 3.5, "euler")  # SD3.5 Large's model card
    assert graph[sampler["model"][0]]["class_type"] == "ModelSamplingSD3"
    sigmas = sampled_sigmas(comfy, graph, sampler["model"], sampler["scheduler"], sampler["steps"], sampler["denoise"])
    expected = sd35_sigmas(sampler["steps"])
    assert len(sigmas) == len(expected) == 29 and expected[-2] == pytest.approx(0.00893, abs=1e-5)
    np.testing.assert_allclose(sigmas, expected, rtol=1e-5, atol=1e-6)


def workflow_sigmas(comfy, graph: dict) -> list[float]:
    """The sigmas a custom-sampler workflow samples with: its sigmas node, run in the real server."""
    sigmas = graph[of_type(graph, "SamplerCustomAdvanced")]["inputs"]["sigmas"]
    probe = {**graph, "900": {"class_type": "TestSigmas", "inputs": {"sigmas": sigmas}}}
    result = comfy.run(ancestors(probe, "900"))
    assert result.ok, result.error
    return json.loads(result.texts("900")[0])


@pytest.mark.parametrize("size", [None, (768, 512, 97), (512, 320, 65)], ids=["shipped", "768x512x97", "512x320x65"])
@pytest.mark.parametrize("workflow", LTXV, ids=lambda p: p.stem)
def test_ltxv_workflows_sample_diffusers_ltx_schedule(comfy, object_info, workflow, size):
    """LTXVScheduler reads the latent it is linked to, so the shift follows the size and length as LTXPipeline's does
    (shipped 704x512x161: mu 2.05; 768x512x97: 1.56; 512x320x65: 1.08)."""
    graph = tiny_api_graph(workflow, object_info)
    latent = graph[of_type(graph, "EmptyLTXVLatentVideo")]["inputs"]
    if size:
        latent.update(zip(("width", "height", "length"), size, strict=True))
    scheduler = graph[of_type(graph, "LTXVScheduler")]["inputs"]
    assert scheduler["latent"] == [of_type(graph, "EmptyLTXVLatentVideo"), 0]
    sigmas = workflow_sigmas(comfy, graph)
    expected = ltxv_sigmas(latent["width"], latent["height"], latent["length"], scheduler["steps"])
    assert len(sigmas) == len(expected) == 51 and expected[-2] == pytest.approx(0.1)
    np.testing.assert_allclose(sigmas, expected, rtol=1e-5, atol=1e-6)
    assert graph[of_type(graph, "KSamplerSelect")]["inputs"]["sampler_name"] == "euler"  # FlowMatchEuler's step


# The pipelines' frames (diffusers' defaults; CogVideoX: the paper's pipeline), size and frame rate, CFG and steps
VIDEO = {"EmptyLTXVLatentVideo": {"frames": 161, "size": (704, 512), "fps": 25.0, "cfg": 3.0, "steps": 50},
         "EmptyHunyuanLatentVideo": {"frames": 49, "size": (720, 480), "fps": 8.0, "cfg": 6.0, "steps": 50}}


@pytest.mark.parametrize("workflow", [w for w in shipped_workflows() if node_types(w) & set(VIDEO)],
                         ids=lambda p: p.stem)
def test_video_workflows_sample_the_frames_their_pipelines_sample(object_info, workflow):
    """LTX-Video: 8k + 1 frames at 25 fps (LTXVConditioning tells the model the rate, the WebP plays at it); CogVideoX:
    49 frames at 8 fps, 720x480. Both decode 1 + 8k (LTX-Video) or 1 + 4k (CogVideoX) frames from their latents."""
    missing = needs_missing_feature(workflow, object_info)
    if missing:
        pytest.skip(missing)
    graph = ui_to_api(json.loads(workflow.read_text()), object_info)
    (latent_type,) = [n["class_type"] for n in graph.values() if n["class_type"] in VIDEO]
    expected = VIDEO[latent_type]
    latent = graph[of_type(graph, latent_type)]["inputs"]
    assert latent["length"] == expected["frames"] and (latent["length"] - 1) % (8 if "LTXV" in latent_type else 4) == 0
    assert (latent["width"], latent["height"]) == expected["size"]
    assert graph[of_type(graph, "SaveAnimatedWEBP")]["inputs"]["fps"] == expected["fps"]
    assert graph[of_type(graph, "CFGGuider")]["inputs"]["cfg"] == expected["cfg"]
    schedulers = [n["inputs"] for n in graph.values() if n["class_type"] in ("BasicScheduler", "LTXVScheduler")]
    assert [s["steps"] for s in schedulers] == [expected["steps"]]
    if latent_type == "EmptyLTXVLatentVideo":
        conditioning = of_type(graph, "LTXVConditioning")
        assert graph[conditioning]["inputs"]["frame_rate"] == expected["fps"]
        assert graph[of_type(graph, "CFGGuider")]["inputs"]["positive"] == [conditioning, 0]
        assert graph[of_type(graph, "CFGGuider")]["inputs"]["negative"] == [conditioning, 1]
