"""Random tiny Flux / CogVideoX / CLIP-L / T5 / VAE weights built from ComfyUI's own classes (run with ComfyUI importable).

    python -m tests.support.comfy_weights --models BASE/models

Architectures are instantiated on the ``meta`` device, so key names and shapes always match the ComfyUI
tree. Weights ~ N(0, 1/fan_in), biases 0, norm scales 1, seeded. Everything is 32 wide: the tiny T5's
d_model = Flux's and CogVideoX's context width = the tiny aligners' output, and the pooled vector is the tiny CLIP-L's 32.
Files (20 MB): diffusion_models/flux1-tiny-random.safetensors, text_encoders/{clip_l,t5xxl}-tiny-random.safetensors,
vae_approx/taef1_{encoder,decoder}.safetensors (VAELoader "taef1"); with a ComfyUI that has native CogVideoX (0.21+)
also diffusion_models/cogvideox-tiny-random.safetensors (native keys: the stock UNETLoader detects it as CogVideoX_T2V)
and vae/cogvideox_vae-tiny-random.safetensors (ComfyUI's CogVideoX VAE class, 8 channels wide; config in its metadata).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from .paths import COMFYUI

TINY_T5 = dict(d_model=32, d_kv=16, num_heads=2, d_ff=64, num_layers=2)
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, projection_dim=32)
TINY_FLUX = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=TINY_T5["d_model"],
                 hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12],
                 theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
# CogVideoX: ComfyUI's detection fixes the head width at 64 and reads the rest from the weights (1 head, 1 block, rotary).
TINY_COGVIDEOX = dict(num_attention_heads=1, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=32,
                      text_embed_dim=TINY_T5["d_model"], num_layers=1, use_rotary_positional_embeddings=True)
TINY_COGVIDEOX_VAE = dict(block_out_channels=[8, 8, 8, 8], layers_per_block=1, groups=2)  # 8x spatial, 4x temporal
FILES = {"flux": "diffusion_models/flux1-tiny-random.safetensors",
         "clip_l": "text_encoders/clip_l-tiny-random.safetensors",
         "t5xxl": "text_encoders/t5xxl-tiny-random.safetensors",
         "cogvideox": "diffusion_models/cogvideox-tiny-random.safetensors",
         "cogvideox_vae": "vae/cogvideox_vae-tiny-random.safetensors"}


def _shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def _random(shapes: dict[str, torch.Size], seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        lower = key.lower()
        if not shape:
            tensor = torch.ones(())
        elif key.endswith("bias"):
            tensor = torch.zeros(shape)
        elif len(shape) == 1 and ("norm" in lower or "ln_" in lower) and key.rsplit(".", 1)[-1] in ("weight", "scale"):
            tensor = torch.ones(shape)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            tensor = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        out[key] = tensor.to(dtype).contiguous()
    return out


def write_all(models: Path) -> list[Path]:
    sys.path.insert(0, str(COMFYUI))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.ops
    from comfy.clip_model import CLIPTextModel
    from comfy.ldm.flux.model import Flux, FluxParams
    from comfy.taesd.taesd import Decoder, Encoder
    from comfy.text_encoders.t5 import T5

    ops = comfy.ops.disable_weight_init
    flux_config = dict(TINY_FLUX)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:  # ComfyUI >= 0.2x: which text-id axes carry positions
        flux_config["txt_ids_dims"] = []
    comfy_dir = Path(comfy.ops.__file__).parent
    clip_cfg = {**json.loads((comfy_dir / "sd1_clip_config.json").read_text()), **TINY_CLIP}
    t5_cfg = {**json.loads((comfy_dir / "text_encoders" / "t5_config_xxl.json").read_text()), **TINY_T5}
    with torch.device("meta"):
        shapes = {
            "flux": _shapes(Flux(operations=ops, dtype=torch.float32, device="meta", **flux_config)),
            "clip_l": _shapes(CLIPTextModel(clip_cfg, torch.float32, "meta", ops)),
            "t5xxl": _shapes(T5(t5_cfg, torch.float32, "meta", ops)),
            "taef1_encoder": _shapes(Encoder(16)),
            "taef1_decoder": _shapes(Decoder(16)),
        }
        if importlib.util.find_spec("comfy.ldm.cogvideo"):
            from comfy.ldm.cogvideo.model import CogVideoXTransformer3DModel
            from comfy.ldm.cogvideo.vae import AutoencoderKLCogVideoX

            shapes["cogvideox"] = _shapes(CogVideoXTransformer3DModel(**TINY_COGVIDEOX, operations=ops))
            shapes["cogvideox_vae"] = _shapes(AutoencoderKLCogVideoX(latent_channels=16, **TINY_COGVIDEOX_VAE))
    metadata = {"flux": {"tiny_flux_config": json.dumps(flux_config)},
                "clip_l": {"tiny_clip_l_config": json.dumps(TINY_CLIP)},
                "t5xxl": {"tiny_t5xxl_config": json.dumps(TINY_T5)},
                "cogvideox_vae": {"tiny_cogvideox_vae_config": json.dumps(TINY_COGVIDEOX_VAE)}}
    written = []
    for seed, (name, shape) in enumerate(shapes.items()):
        path = models / FILES.get(name, f"vae_approx/{name}.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(_random(shape, seed), str(path), metadata={"note": "random test weights", **metadata.get(name, {})})
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True)
    for path in write_all(parser.parse_args().models):
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
