"""Run ComfyUI's CogVideoX samplers and diffusers' CogVideoXDDIMScheduler on the same toy v-prediction model; print JSON.

    python tests/support/cogvideox_sampler_parity.py COMFYUI_DIR [STEPS]

Run in its own process with a ComfyUI tree that has native CogVideoX (0.21+). The toy model is a fixed function of the
latent and the integer timestep, so the two frameworks see the same model; only their sampling loops differ. Printed:
the largest |difference| between diffusers' final latent and (a) core's VOIDSampler (DDIM in alpha space) with
BasicScheduler "simple" sigmas, (b) KSampler's euler with the same sigmas, plus the final latent's scale.
"""

from __future__ import annotations

import json
import sys

import torch

SHAPE = (1, 4, 3, 6, 6)  # [B, C, T, H, W]


def toy_velocity(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """A smooth, timestep-dependent stand-in for the transformer's v-prediction."""
    t = timestep.double().reshape(-1, 1, 1, 1, 1) / 1000.0
    mix = torch.linspace(-0.5, 0.5, x.shape[1], dtype=torch.float64).reshape(1, -1, 1, 1, 1)
    return 0.7 * x.double() * (1.0 - 0.5 * t) + mix * t + 0.1 * torch.tanh(x.double())


def diffusers_ddim(noise: torch.Tensor, steps: int) -> torch.Tensor:
    from diffusers import CogVideoXDDIMScheduler

    scheduler = CogVideoXDDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                       prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
                                       snr_shift_scale=1.0, steps_offset=0, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    x = noise.double()
    for t in scheduler.timesteps:
        x = scheduler.step(toy_velocity(x, t), t, x).prev_sample
    return x


def comfyui_samplers(comfyui: str, noise: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    sys.path.insert(0, comfyui)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.k_diffusion.sampling as k_sampling
    import comfy.model_base
    import comfy.samplers
    import comfy.supported_models
    import utils.extra_config  # noqa: F401  (before nodes: nodes.py puts comfy/ first on sys.path)
    from comfy_extras.nodes_void import VOID_DDIM

    config = comfy.supported_models.CogVideoX_T2V({"image_model": "cogvideox"})
    sampling = comfy.model_base.model_sampling(config, comfy.model_base.ModelType.V_PREDICTION_DDPM)
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", steps).double()

    def denoise(x, sigma, **_):
        velocity = toy_velocity(sampling.calculate_input(sigma, x), sampling.timestep(sigma))
        return sampling.calculate_denoised(sigma, velocity, x)

    void = VOID_DDIM().sample(denoise, sigmas, {"model_options": {}, "seed": 0}, None, noise.double())
    start = sampling.noise_scaling(sigmas[0], noise.double(), torch.zeros_like(noise, dtype=torch.float64), max_denoise=True)
    euler = sampling.inverse_noise_scaling(sigmas[-1], k_sampling.sample_euler(denoise, start, sigmas, disable=True))
    return {"void": void.double(), "euler": euler.double()}


def main() -> None:
    comfyui, steps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = diffusers_ddim(noise, steps)
    ours = comfyui_samplers(comfyui, noise, steps)
    report = {name: float((x - reference).abs().max()) for name, x in ours.items()}
    print(json.dumps({"max_abs_diff": report, "reference_scale": float(reference.abs().max()), "steps": steps}))


if __name__ == "__main__":
    main()
