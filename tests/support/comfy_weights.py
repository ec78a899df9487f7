"""Random tiny Flux / Chroma / SD3 / LTX-Video / CogVideoX / CLIP-L / T5 / VAE weights built from ComfyUI's own classes
(run with ComfyUI importable).

    python -m tests.support.comfy_weights --models BASE/models

Architectures are instantiated on the ``meta`` device, so key names and shapes always match the ComfyUI
tree. Weights ~ N(0, 1/fan_in), biases 0, norm scales 1, seeded. Everything is 32 wide: the tiny T5's
d_model = Flux's and CogVideoX's context width = the tiny aligners' output, and the pooled vector is the tiny CLIP-L's 32.
Files (20 MB): diffusion_models/flux1-tiny-random.safetensors, text_encoders/{clip_l,t5xxl}-tiny-random.safetensors,
vae_approx/taef1_{encoder,decoder}.safetensors (VAELoader "taef1"); with a ComfyUI that has native CogVideoX (0.21+)
also diffusion_models/cogvideox-tiny-random.safetensors (native keys: the stock UNETLoader detects it as CogVideoX_T2V)
and vae/cogvideox_vae-tiny-random.safetensors (ComfyUI's CogVideoX VAE class, 8 channels wide; config in its metadata).
Checkpoints that the stock CheckpointLoaderSimple loads as they are: checkpoints/sd3.5-tiny-random.safetensors (an MMDiT
that ComfyUI sizes from its weights, with a 16-channel TAESD as its VAE) and checkpoints/ltxv-tiny-random.safetensors
(ComfyUI reads the sizes of LTX-Video's transformer and VAE from the file's ``config`` metadata, as for the real ones).
diffusion_models/{chroma,pixart_sigma,mochi}-tiny-random.safetensors are tiny Chroma, PixArt-Σ and Mochi (ComfyUI's
detection fixes their real sizes, so they load through the test loader that reads the config stored in their metadata,
like the tiny Flux); vae/mochi_vae-tiny-random.safetensors is a 32-channel Mochi VAE (fp16, config in its metadata) and
vae_approx/taesdxl_{encoder,decoder}.safetensors a 4-channel TAESD (VAELoader "taesdxl", PixArt-Σ's SDXL latents).
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
# Chroma: Flux's blocks without modulation layers, fed by a small "distilled guidance" MLP (its 64-wide input is fixed).
TINY_CHROMA = dict({k: v for k, v in TINY_FLUX.items() if k not in ("vec_in_dim", "guidance_embed")}, image_model="chroma",
                   in_channels=64, out_channels=64, in_dim=64, out_dim=64, hidden_dim=32, n_layers=1)
# SD3's MMDiT: ComfyUI reads every size from the weights (64 wide per block: 1 block of 1 head); the pooled vector of a
# T5-only SD3 CLIP is 2048 zeros (CLIP-L + CLIP-G); positions for up to 64 x 64 patches (1024 px).
TINY_MMDIT = dict(in_channels=16, out_channels=16, patch_size=2, depth=1, adm_in_channels=2048, pos_embed_max_size=64,
                  num_patches=64 * 64, qk_norm="rms", input_size=None, pos_embed_scaling_factor=None,
                  x_block_self_attn_layers=[], context_embedder_config={
                      "target": "torch.nn.Linear", "params": {"in_features": TINY_T5["d_model"], "out_features": 64}})
# LTX-Video v1: 2 heads of 32, 1 block; 128 latent channels (fixed by ComfyUI's LTX-Video VAE), 32x spatial (4 from the
# patch, 2 per compress_all), 8x temporal. ComfyUI finds the VAE by a res_x block first in its decoder.
TINY_LTXV = dict(num_attention_heads=2, attention_head_dim=32, cross_attention_dim=64, caption_channels=TINY_T5["d_model"],
                 num_layers=1)
TINY_LTXV_VAE = dict(dims=3, in_channels=3, out_channels=3, latent_channels=128, patch_size=4, norm_layer="pixel_norm",
                     latent_log_var="uniform", causal_decoder=False, encoder_base_channels=8, decoder_base_channels=8,
                     blocks=[["compress_all", 1], ["compress_all", 1], ["compress_all", 1], ["res_x", 1]])
# PixArt-Σ: 1 block of 2 heads, 64 wide, reading T5 states of the tiny T5's width
TINY_PIXART = dict(image_model="pixart_sigma", input_size=16, patch_size=2, in_channels=4, hidden_size=64, depth=1,
                   num_heads=2, caption_channels=TINY_T5["d_model"], model_max_length=300, micro_condition=False,
                   pe_interpolation=0.25)
# Mochi: 1 joint block, visual stream 64 wide and text stream 32 wide, 2 heads; 12 latent channels (Mochi's VAE). Its
# blocks insist on the real visual MLP width (12,288), so that one layer is not tiny.
TINY_MOCHI = dict(image_model="mochi_preview", depth=1, patch_size=2, num_heads=2, hidden_size_x=64, hidden_size_y=32,
                  mlp_ratio_x=1536 * 8 / 64, mlp_ratio_y=2.0, learn_sigma=False, in_channels=12, qk_norm=True, qkv_bias=False,
                  out_bias=True, attn_drop=0.0, patch_embed_bias=True, posenc_preserve_area=True, timestep_mlp_bias=True,
                  attend_to_padding=False, timestep_scale=1000.0, use_t5=True, t5_feat_dim=TINY_T5["d_model"],
                  t5_token_length=256, rope_theta=10000.0)
# Mochi's VAE with 32 channels per level (its GroupNorm has 32 groups): 6x temporal, 8x spatial as the real one; ComfyUI
# finds it by a 4th residual block in its decoder's third block.
_MOCHI_VAE_LEVELS = dict(base_channels=32, channel_multipliers=[1, 2, 3, 4], num_res_blocks=[1, 1, 4, 1, 1], latent_dim=12,
                         padding_mode="replicate")
TINY_MOCHI_VAE = {  # the Encoder's and Decoder's arguments (comfy.ldm.genmo.vae.model.VideoVAE fixes them at full size)
    "encoder": dict(_MOCHI_VAE_LEVELS, in_channels=15, temporal_reductions=[1, 2, 3], spatial_reductions=[2, 2, 2],
                    prune_bottlenecks=[False] * 5, has_attentions=[False] * 5, affine=True, bias=True, input_is_conv_1x1=True),
    "decoder": dict(_MOCHI_VAE_LEVELS, out_channels=3, temporal_expansions=[1, 2, 3], spatial_expansions=[2, 2, 2],
                    has_attention=[False] * 5, output_norm=False, nonlinearity="silu", output_nonlinearity="silu",
                    causal=True)}
FILES = {"flux": "diffusion_models/flux1-tiny-random.safetensors",
         "pixart": "diffusion_models/pixart_sigma-tiny-random.safetensors",
         "mochi": "diffusion_models/mochi-tiny-random.safetensors",
         "mochi_vae": "vae/mochi_vae-tiny-random.safetensors",
         "chroma": "diffusion_models/chroma-tiny-random.safetensors",
         "sd3": "checkpoints/sd3.5-tiny-random.safetensors",
         "ltxv": "checkpoints/ltxv-tiny-random.safetensors",
         "clip_l": "text_encoders/clip_l-tiny-random.safetensors",
         "t5xxl": "text_encoders/t5xxl-tiny-random.safetensors",
         "cogvideox": "diffusion_models/cogvideox-tiny-random.safetensors",
         "cogvideox_vae": "vae/cogvideox_vae-tiny-random.safetensors"}


def _shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def _prefixed(prefix: str, shapes: dict[str, torch.Size]) -> dict[str, torch.Size]:
    return {prefix + key: shape for key, shape in shapes.items()}


def _with_fields(config: dict, params: type, **extra) -> dict:
    """``config`` and those of ``extra`` that this ComfyUI's ``params`` dataclass has (fields added since 0.3.75)."""
    fields = {f.name for f in dataclasses.fields(params)}
    return {**config, **{k: v for k, v in extra.items() if k in fields}}


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
    from comfy.ldm.chroma.model import Chroma, ChromaParams
    from comfy.ldm.flux.model import Flux, FluxParams
    from comfy.ldm.genmo.joint_model.asymm_models_joint import AsymmDiTJoint
    from comfy.ldm.genmo.vae import model as mochi_vae
    from comfy.ldm.lightricks.model import LTXVModel
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    from comfy.ldm.pixart.pixartms import PixArtMS
    from comfy.taesd.taesd import TAESD, Decoder, Encoder
    from comfy.text_encoders.t5 import T5

    ops = comfy.ops.disable_weight_init
    # ComfyUI >= 0.2x: which text-id axes carry positions; Chroma's (absent) pooled-vector input
    flux_config = _with_fields(TINY_FLUX, FluxParams, txt_ids_dims=[])
    chroma_config = _with_fields(TINY_CHROMA, ChromaParams, txt_ids_dims=[], vec_in_dim=None)
    ltxv_config = {"transformer": TINY_LTXV, "vae": TINY_LTXV_VAE}
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
        shapes["chroma"] = _shapes(Chroma(operations=ops, dtype=torch.float32, device="meta", **chroma_config))
        shapes["sd3"] = {**_prefixed("model.diffusion_model.", _shapes(MMDiT(operations=ops, device="meta", **TINY_MMDIT))),
                         **_prefixed("first_stage_model.", _shapes(TAESD(latent_channels=16)))}
        shapes["ltxv"] = {**_prefixed("model.diffusion_model.", _shapes(LTXVModel(operations=ops, device="meta", **TINY_LTXV))),
                          **_prefixed("vae.", _shapes(VideoVAE(config=TINY_LTXV_VAE)))}
        shapes["mochi"] = _shapes(AsymmDiTJoint(operations=ops, device="meta", **TINY_MOCHI))
        shapes["mochi_vae"] = {**_prefixed("encoder.", _shapes(mochi_vae.Encoder(**TINY_MOCHI_VAE["encoder"]))),
                               **_prefixed("decoder.", _shapes(mochi_vae.Decoder(**TINY_MOCHI_VAE["decoder"])))}
        shapes["taesdxl_encoder"] = _shapes(Encoder(4))
        shapes["taesdxl_decoder"] = _shapes(Decoder(4))
    shapes["pixart"] = _shapes(PixArtMS(operations=ops, device="meta", **TINY_PIXART))  # it calls .item() while built
    metadata = {"flux": {"tiny_unet_config": json.dumps(flux_config)},
                "chroma": {"tiny_unet_config": json.dumps(chroma_config)},
                "ltxv": {"config": json.dumps(ltxv_config)},
                "pixart": {"tiny_unet_config": json.dumps(TINY_PIXART)},
                "mochi": {"tiny_unet_config": json.dumps(TINY_MOCHI)},
                "mochi_vae": {"tiny_mochi_vae_config": json.dumps(TINY_MOCHI_VAE)},
                "clip_l": {"tiny_clip_l_config": json.dumps(TINY_CLIP)},
                "t5xxl": {"tiny_t5xxl_config": json.dumps(TINY_T5)},
                "cogvideox_vae": {"tiny_cogvideox_vae_config": json.dumps(TINY_COGVIDEOX_VAE)}}
    written = []
    for seed, (name, shape) in enumerate(shapes.items()):
        path = models / FILES.get(name, f"vae_approx/{name}.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        dtype = torch.float16 if name == "mochi_vae" else torch.float32  # the largest file, halved
        save_file(_random(shape, seed, dtype), str(path), metadata={"note": "random test weights", **metadata.get(name, {})})
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True)
    for path in write_all(parser.parse_args().models):
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
