"""The CogVideoX workflow's sampler against diffusers' CogVideoXDDIMScheduler (the paper's), in ComfyUI's own code."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.support.paths import COMFYUI, REPO

pytestmark = pytest.mark.comfyui


def test_voidsampler_is_diffusers_ddim_and_ksampler_euler_is_not():
    """Same toy v-prediction model, 50 steps: core's VOIDSampler on BasicScheduler "simple" sigmas ends where diffusers'
    DDIM (trailing, zero terminal SNR) ends, up to ComfyUI's clamp of the first alpha_bar (4.9e-8 instead of 0). KSampler's
    euler scales the starting noise by sqrt(1 + sigma_max^2) ~ 4518 and feeds the model unscaled: nowhere near."""
    if not (COMFYUI / "comfy" / "ldm" / "cogvideo").is_dir():
        pytest.skip(f"{COMFYUI} has no native CogVideoX (ComfyUI 0.21+)")
    assert importlib.util.find_spec("diffusers")
    run = subprocess.run([sys.executable, str(REPO / "tests" / "support" / "cogvideox_sampler_parity.py"), str(COMFYUI), "50"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    scale = report["reference_scale"]
    assert report["max_abs_diff"]["void"] < 1e-3 * scale
    assert report["max_abs_diff"]["euler"] > 0.5 * scale
