"""Author the shipped workflows (workflows/*.json, UI format 0.4) and their example input images.

    .dev/venv/bin/python scripts/build_workflows.py

The graphs are written here in API form with the real model file names, converted to the UI format
with a running ComfyUI's /object_info, and given a setup note and download links. Tests convert them
back the way the frontend does (tests/support/workflow_api.py) and run them with tiny models.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.comfy_server import ComfyServer, prepare_base
from tests.support.paths import REPO
from thinkdiff.images import REFERENCE_MAX_PIXELS, REFERENCE_MIN_PIXELS
from thinkdiff.vram_advice import QWEN2_VL_7B_GB
from thinkdiff.workflow_api import api_to_ui

WORKFLOWS = REPO / "workflows"
IMAGES = WORKFLOWS / "images"
COBSAT_INSTRUCTION = (
    "I give you several words and pictures. First, please analyse what the next picture is. Then give me a detailed "
    "diffusion prompt to describe the next picture. Please only provide me the detailed prompt and start the answer "
    "with 'Create an image'.\n\n")
STYLE_INSTRUCTION = "Create an diffusion prompt for a dog in the style of this picture. Do not use 'similar to the image'"
# Reasoning -> video: the same two kinds of prompt, asking for a video prompt (the answer's 128 tokens drive the video)
COBSAT_VIDEO_INSTRUCTION = COBSAT_INSTRUCTION.replace("the next picture. Please", "a short video of the next picture. "
                                                      "Please").replace("'Create an image'", "'A video of'")
VIDEO_STYLE_INSTRUCTION = ("Create a diffusion prompt for a short video of a dog running through a park in the style of "
                           "this picture, describing its motion. Do not use 'similar to the image'")
T5XXL = {"name": "t5xxl_fp16.safetensors", "directory": "text_encoders",
         "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"}
CLIP_L = {"name": "clip_l.safetensors", "directory": "text_encoders",
          "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"}
CLIP_G = {"name": "clip_g.safetensors", "directory": "text_encoders",
          "url": "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/text_encoders/clip_g.safetensors"}
FLUX_AE = {"name": "ae.safetensors", "directory": "vae",
           "url": "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors"}
WIDTH, HEIGHT = ["28", 0], ["29", 0]  # the Int nodes that feed both the latent and a resolution-dependent shift
LVLM_STEPS = """## ThinkDiff-LVLM setup
1. **Qwen2-VL-7B-Instruct** (whole folder) → `ComfyUI/models/LLM/Qwen2-VL-7B-Instruct/`
   `huggingface-cli download Qwen/Qwen2-VL-7B-Instruct --local-dir ComfyUI/models/LLM/Qwen2-VL-7B-Instruct`
2. **ThinkDiff aligner** → `ComfyUI/models/thinkdiff/thinkdiff_lvlm.safetensors`:
   download the release checkpoint from https://huggingface.co/Mifucius/ThinkDiff and convert it once with
   `python -m thinkdiff convert-aligner thinkdiff_lvlm.pth ComfyUI/models/thinkdiff/thinkdiff_lvlm.safetensors`
   (run in `ComfyUI/custom_nodes/ComfyUI-ThinkDiff`).
"""
CLIP_STEPS = """## ThinkDiff-CLIP setup
1. **Vision encoder** (BLIP-2's EVA ViT-g, ~2 GB) → `ComfyUI/models/thinkdiff/blip2_vision.safetensors`:
   download https://huggingface.co/Salesforce/blip2-flan-t5-xxl, then (in `ComfyUI/custom_nodes/ComfyUI-ThinkDiff`)
   `python -m thinkdiff extract-vision PATH/blip2-flan-t5-xxl ComfyUI/models/thinkdiff/blip2_vision.safetensors`
   (the 15 GB folder can be deleted afterwards).
2. **ThinkDiff-CLIP aligner** → `ComfyUI/models/thinkdiff/thinkdiff_clip.safetensors`: convert the release from
   https://huggingface.co/Mifucius/ThinkDiff with `python -m thinkdiff convert-aligner thinkdiff_clip.pth ...`.
"""
VLM_MEMORY = """The VLM's answer appears on the *ThinkDiff VLM Think* node while it generates.

**GPU memory** (the VLM loader's *weights*; ComfyUI unloads the VLM before {{model}} loads): 24 GB cards: default (bf16,
{default} GB); 12-16 GB: fp8_e4m3fn ({fp8_e4m3fn} GB); 8 GB: bnb_nf4 ({bnb_nf4} GB, `pip install bitsandbytes`). `python -m thinkdiff
doctor` recommends one for your GPU.""".format(**QWEN2_VL_7B_GB)
NOT_MEASURED = ("**Not measured**: the released aligners were trained in Flan-T5-XXL's space and are used here with the "
                "T5-v1.1-XXL this model reads, as the paper did for Flux; the quality on this model has not been measured "
                "(no GPU or real weights were available).")


@dataclass(frozen=True)
class Model:
    """A diffusion model the workflows sample, loaded and sampled as its reference diffusers pipeline does.

    ``loader`` (node 21) gives MODEL, and VAE at output 2 when ``vae`` is None (a checkpoint); ``text_encoder`` is node 7;
    ``negative`` is the negative prompt (CLIPTextEncode; None: ConditioningZeroOut, for Flux at CFG 1); ``sampling`` holds
    the tail's settings (``image_tail`` / ``video_tail``); ``links`` are the loaders' download links; ``paper`` the
    ThinkDiff variants the paper sampled this model with.
    """

    title: str
    loader: dict
    vae: dict | None
    text_encoder: dict
    negative: str | None
    sampling: dict
    links: dict[str, list]
    setup: str  # the note's step 3: the files and how the workflow samples
    paper: tuple[str, ...] = ()


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


FLUX = Model(
    "Flux.1-dev", node("UNETLoader", unet_name="flux1-dev.safetensors", weight_dtype="default"),
    node("VAELoader", vae_name="ae.safetensors"),
    node("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors", type="flux"), None,
    {"shift": node("ModelSamplingFlux", max_shift=1.15, base_shift=0.5, width=WIDTH, height=HEIGHT), "steps": 28,
     "cfg": 1.0, "scheduler": "simple"},
    {"UNETLoader": [{"name": "flux1-dev.safetensors", "directory": "diffusion_models",
                     "url": "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors"}],
     "DualCLIPLoader": [CLIP_L, T5XXL], "VAELoader": [FLUX_AE]},
    "3. **Flux.1-dev**: flux1-dev.safetensors (diffusion_models), clip_l + t5xxl_fp16 (text_encoders), ae.safetensors (vae)."
    "\n\nSampled as in the paper: 28 Euler steps, guidance 3.5, CFG 1, and diffusers' resolution-dependent shift "
    "(ModelSamplingFlux: change the size only on the *width* / *height* nodes, which feed both it and the latent).",
    paper=("lvlm", "clip"))
CHROMA = Model(
    "Chroma1-HD", node("UNETLoader", unet_name="Chroma1-HD.safetensors", weight_dtype="default"),
    node("VAELoader", vae_name="ae.safetensors"),
    node("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="chroma", device="default"),
    "low quality, ugly, unfinished, out of focus, deformed, disfigure, blurry, smudged, restricted palette, flat colors",
    {"shift": node("ModelSamplingFlux", max_shift=1.15, base_shift=0.5, width=WIDTH, height=HEIGHT), "steps": 40,
     "cfg": 3.0, "scheduler": "simple"},
    {"UNETLoader": [{"name": "Chroma1-HD.safetensors", "directory": "diffusion_models",
                     "url": "https://huggingface.co/lodestones/Chroma1-HD/resolve/main/Chroma1-HD.safetensors"}],
     "CLIPLoader": [T5XXL], "VAELoader": [FLUX_AE]},
    "3. **Chroma1-HD**: Chroma1-HD.safetensors (diffusion_models), t5xxl_fp16 (text_encoders, CLIPLoader type chroma), "
    "FLUX.1's ae.safetensors (vae).\n\nSampled as diffusers' ChromaPipeline with the model card's settings: 40 steps, CFG "
    "3, its negative prompt, and the image-size-dependent shift (ModelSamplingFlux: change the size only on the *width* / "
    "*height* nodes).")
SD35 = Model(
    "SD3.5 Large", node("CheckpointLoaderSimple", ckpt_name="sd3.5_large.safetensors"), None,
    node("TripleCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="clip_g.safetensors",
           clip_name3="t5xxl_fp16.safetensors"), "",
    {"shift": node("ModelSamplingSD3", shift=3.0), "steps": 28, "cfg": 3.5, "scheduler": "normal"},
    {"CheckpointLoaderSimple": [{"name": "sd3.5_large.safetensors", "directory": "checkpoints", "url":
                                 "https://huggingface.co/stabilityai/stable-diffusion-3.5-large/resolve/main/sd3.5_large.safetensors"}],
     "TripleCLIPLoader": [CLIP_L, CLIP_G, T5XXL]},
    "3. **SD3.5 Large** (gated: accept its licence on the model page): sd3.5_large.safetensors (checkpoints; its VAE is "
    "inside), clip_l + clip_g + t5xxl_fp16 (text_encoders, TripleCLIPLoader).\n\nSampled as diffusers' "
    "StableDiffusion3Pipeline with the model card's settings: 28 steps, CFG 3.5, FlowMatchEuler with shift 3.0 "
    "(ModelSamplingSD3; scheduler *normal* gives diffusers' timesteps exactly).")
COGVIDEOX = Model(
    "CogVideoX-5b", node("UNETLoader", unet_name="cogvideox_5b_bf16.safetensors", weight_dtype="default"),
    node("VAELoader", vae_name="cogvideox_vae.safetensors"),
    node("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="cogvideox", device="default"), "",
    {"latent": node("EmptyHunyuanLatentVideo", width=720, height=480, length=49, batch_size=1),
     "scheduler": node("BasicScheduler", model=["21", 0], scheduler="simple", steps=50, denoise=1.0),
     "sampler": node("VOIDSampler"), "cfg": 6.0, "fps": 8.0, "frame_rate": False},
    # CogVideoX-5b's transformer and VAE in ComfyUI's native format have no single-file download we can vouch for:
    # the note names the source (THUDM/CogVideoX-5b); only the T5 gets a download link.
    {"CLIPLoader": [T5XXL]},
    "3. **CogVideoX-5b** (native CogVideoX needs ComfyUI 0.21 or newer): CogVideoX-5b "
    "(https://huggingface.co/THUDM/CogVideoX-5b) as a ComfyUI diffusion model + VAE, and t5xxl_fp16 with CLIPLoader type "
    "cogvideox.\n\nSampled as the paper's diffusers pipeline: 49 frames at 8 fps, 720x480, 50 DDIM steps (core's "
    "*VOIDSampler*, the DDIM of diffusers-trained CogVideoX models) on BasicScheduler *simple* (= diffusers' trailing "
    "timesteps), CFG 6. KSampler is not equivalent for this model type.", paper=("clip",))
LTXV = Model(
    "LTX-Video 2B v0.9.5", node("CheckpointLoaderSimple", ckpt_name="ltx-video-2b-v0.9.5.safetensors"), None,
    node("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="ltxv", device="default"),
    "worst quality, inconsistent motion, blurry, jittery, distorted",
    {"latent": node("EmptyLTXVLatentVideo", width=704, height=512, length=161, batch_size=1),
     "scheduler": node("LTXVScheduler", steps=50, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1,
                         latent=["22", 0]),
     "sampler": node("KSamplerSelect", sampler_name="euler"), "cfg": 3.0, "fps": 25.0, "frame_rate": True},
    {"CheckpointLoaderSimple": [{"name": "ltx-video-2b-v0.9.5.safetensors", "directory": "checkpoints", "url":
                                 "https://huggingface.co/Lightricks/LTX-Video/resolve/main/ltx-video-2b-v0.9.5.safetensors"}],
     "CLIPLoader": [T5XXL]},
    "3. **LTX-Video 2B v0.9.5**: ltx-video-2b-v0.9.5.safetensors (checkpoints; its VAE is inside), t5xxl_fp16 "
    "(text_encoders, CLIPLoader type ltxv).\n\nSampled as diffusers' LTXPipeline: 161 frames (8k + 1) at 25 fps, 704x512, "
    "50 Euler steps, CFG 3, the negative prompt of diffusers' LTX-Video example; LTXVScheduler reads the latent's size for the "
    "resolution-dependent shift (base 0.95, max 2.05, stretched to 0.1), so change the size or length only on the latent "
    "node.")


def note(model: Model, variant: str) -> str:
    """A workflow's setup note: the variant's steps 1-2, the model's files and sampling, the VLM's memory advice (LVLM),
    and where the paper did not sample this model with this variant, that its quality is not measured."""
    steps = LVLM_STEPS if variant == "lvlm" else CLIP_STEPS
    memory = "\n\n" + VLM_MEMORY.format(model=model.title) if variant == "lvlm" else ""
    unmeasured = "" if variant in model.paper else "\n\n" + NOT_MEASURED
    return f"{steps}{model.setup}{memory}{unmeasured}"


def example_images() -> None:
    """Small drawn inputs: two coloured balls (in-context), a dotted pattern (style) and a sign with text (image + text)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name, colour in (("blue", (40, 80, 220)), ("brown", (120, 72, 36))):
        image = Image.new("RGB", (256, 256), (235, 235, 230))
        ImageDraw.Draw(image).ellipse((48, 48, 208, 208), fill=colour)
        image.save(IMAGES / f"thinkdiff_{name}_ball.png")
    image = Image.new("RGB", (256, 256), (250, 240, 210))
    draw = ImageDraw.Draw(image)
    for i in range(8):
        for j in range(8):
            colour = ((i * 37) % 255, (j * 53) % 255, ((i + j) * 29) % 255)
            draw.ellipse((i * 32 + 6, j * 32 + 6, i * 32 + 26, j * 32 + 26), fill=colour)
    image.save(IMAGES / "thinkdiff_dots.png")
    image = Image.new("RGB", (384, 256), (244, 236, 214))
    draw = ImageDraw.Draw(image)
    draw.rectangle((16, 16, 368, 240), outline=(40, 40, 40), width=6)
    draw.multiline_text((192, 128), "THINK\nTHEN\nDRAW", fill=(180, 30, 30), font=ImageFont.load_default(56), anchor="mm",
                        align="center")
    image.save(IMAGES / "thinkdiff_sign.png")


def negative(model: Model, positive: str) -> dict:
    """Node 20: the negative prompt through the model's own text encoder, or (Flux at CFG 1) the positive zeroed out."""
    if model.negative is None:
        return {"20": node("ConditioningZeroOut", conditioning=[positive, 0])}
    return {"20": node("CLIPTextEncode", clip=["7", 0], text=model.negative)}


def vae(model: Model) -> tuple[dict, list]:
    """The VAE loader node (24), if any, and the VAE link: the loader's, or the checkpoint's own (output 2)."""
    return ({"24": model.vae}, ["24", 0]) if model.vae else ({}, ["21", 2])


def image_tail(model: Model, positive: str, size: int, prefix: str) -> dict:
    """Sampling as the model's diffusers pipeline: its shift node (a resolution-dependent one reads the width / height Int
    nodes that also size the latent, so a size change cannot leave the schedule behind), KSampler's steps, CFG and the
    scheduler that gives the pipeline's sigmas (Flux.1-dev as in the paper: guidance 3.5 in the conditioning, CFG 1)."""
    sampling = model.sampling
    vae_node, vae_link = vae(model)
    return {
        **negative(model, positive),
        "21": model.loader,
        "22": node("EmptySD3LatentImage", width=WIDTH, height=HEIGHT, batch_size=1),
        "23": node("KSampler", model=["27", 0], seed=0, steps=sampling["steps"], cfg=sampling["cfg"], sampler_name="euler",
                   scheduler=sampling["scheduler"], positive=[positive, 0], negative=["20", 0], latent_image=["22", 0],
                   denoise=1.0),
        **vae_node,
        "25": node("VAEDecode", samples=["23", 0], vae=vae_link),
        "26": node("SaveImage", images=["25", 0], filename_prefix=prefix),
        "27": {"class_type": sampling["shift"]["class_type"], "inputs": {"model": ["21", 0], **sampling["shift"]["inputs"]}},
        "28": {**node("PrimitiveInt", value=size), "_meta": {"title": "width"}},
        "29": {**node("PrimitiveInt", value=size), "_meta": {"title": "height"}},
    }


def video_tail(model: Model, positive: list, negative_link: list, prefix: str) -> dict:
    """Sampling as the model's diffusers pipeline with core's custom sampler: its latent (frames), scheduler (node 28),
    sampler (29) and CFG; LTX-Video's frame rate goes into both conditionings (node 31) as LTXVConditioning does."""
    sampling = model.sampling
    vae_node, vae_link = vae(model)
    conditioning = {"positive": positive, "negative": negative_link}
    if sampling["frame_rate"]:
        conditioning = {"positive": ["31", 0], "negative": ["31", 1]}
    return {
        "21": model.loader,
        "22": sampling["latent"],
        "23": node("SamplerCustomAdvanced", noise=["30", 0], guider=["27", 0], sampler=["29", 0], sigmas=["28", 0],
                   latent_image=["22", 0]),
        **vae_node,
        "25": node("VAEDecode", samples=["23", 0], vae=vae_link),
        "26": node("SaveAnimatedWEBP", images=["25", 0], filename_prefix=prefix, fps=sampling["fps"], lossless=False,
                   quality=90, method="default"),
        "27": node("CFGGuider", model=["21", 0], **conditioning, cfg=sampling["cfg"]),
        "28": sampling["scheduler"],
        "29": sampling["sampler"],
        "30": node("RandomNoise", noise_seed=42),
        **({"31": node("LTXVConditioning", positive=positive, negative=negative_link, frame_rate=sampling["fps"])}
           if sampling["frame_rate"] else {}),
    }


def t5_tail(model: Model, positive: str, prefix: str, size: int = 1024) -> dict:
    """Node 20 (the negative) and the model's sampling tail, for a ThinkDiff T5 conditioning node ``positive``."""
    if "latent" in model.sampling:
        return {**negative(model, positive), **video_tail(model, [positive, 0], ["20", 0], prefix)}
    return image_tail(model, positive, size, prefix)


def flux_tail(positive: str, size: int, prefix: str) -> dict:
    return image_tail(FLUX, positive, size, prefix)


def thinkdiff_head(prompt: str, images: list, picture_labels: str = "auto", min_pixels: int = REFERENCE_MIN_PIXELS,
                   max_pixels: int = REFERENCE_MAX_PIXELS) -> dict:
    return {
        "1": node("ThinkDiffVLMLoader", model="Qwen2-VL-7B-Instruct", dtype="auto", device="default", weights="default"),
        "5": node("ThinkDiffVLMEncode", vlm=["1", 0], prompt=prompt, seed=42, max_new_tokens=128, temperature=0.6, top_p=0.9,
                  greedy=False, stop_at_eos=False, picture_labels=picture_labels, min_pixels=min_pixels,
                  max_pixels=max_pixels, images=images),
        "6": node("ThinkDiffAlignerLoader", aligner_name="thinkdiff_lvlm.safetensors"),
    }


def flux_head(prompt: str, images: list, text: str = "", **encode) -> dict:
    return {
        **thinkdiff_head(prompt, images, **encode),
        "7": FLUX.text_encoder,
        "8": node("ThinkDiffFluxConditioning", features=["5", 0], aligner=["6", 0], guidance=3.5, text=text,
                  text_tokens=128, clip=["7", 0]),
    }


TWO_BALLS = {
    "2": node("LoadImage", image="thinkdiff_blue_ball.png"),
    "3": node("LoadImage", image="thinkdiff_brown_ball.png"),
    "4": node("ImageBatch", image1=["2", 0], image2=["3", 0]),
}
COBSAT_WORDS = "Word 1: blue, <image>\n\nWord 2: brown, <image>\n\nWord 3: orange, "


def in_context() -> dict:
    return {**TWO_BALLS, **flux_head(COBSAT_INSTRUCTION + COBSAT_WORDS, ["4", 0]), **flux_tail("8", 512, "ThinkDiff/in_context")}


def image_instruction() -> dict:
    graph = {"2": node("LoadImage", image="thinkdiff_dots.png")}
    return {**graph, **flux_head(STYLE_INSTRUCTION, ["2", 0]), **flux_tail("8", 1024, "ThinkDiff/image_instruction")}


def image_plus_text() -> dict:
    """The reference's image + extra-text demo (test_mllama_t5_decoder_flux_multi_image_input.py): Qwen sees the image
    alone (no instruction, max_pixels 65,536); the question goes only to Flux's T5, appended after the 128 LVLM tokens,
    and sets the pooled vector; 512x512."""
    graph = {"2": node("LoadImage", image="thinkdiff_sign.png")}
    head = flux_head("", ["2", 0], text="Reconstruct the texts in this image.", max_pixels=65536)
    return {**graph, **head, **flux_tail("8", 512, "ThinkDiff/image_plus_text")}


def lvlm_t5(model: Model, prompt: str, images: dict, prefix: str) -> dict:
    """ThinkDiff-LVLM into a T5-XXL model: the VLM's 128 aligned answer tokens through ThinkDiffT5Conditioning."""
    image = ["4", 0] if "4" in images else ["2", 0]
    return {**images, **thinkdiff_head(prompt, image), "7": model.text_encoder,
            "8": node("ThinkDiffT5Conditioning", features=["5", 0], aligner=["6", 0], clip=["7", 0], text=""),
            **t5_tail(model, "8", prefix)}


def clip_head(images: dict, aligner: str = "thinkdiff_clip.safetensors") -> dict:
    return {
        **images,
        "9": node("ThinkDiffVisionLoader", vision_name="blip2_vision.safetensors", dtype="auto", device="default"),
        "5": node("ThinkDiffImageEncode", vision=["9", 0], images=["4", 0]),
        "6": node("ThinkDiffAlignerLoader", aligner_name=aligner),
    }


def clip_flux(images: dict, text: str, prefix: str) -> dict:
    return {
        **clip_head(images),
        "7": FLUX.text_encoder,
        "8": node("ThinkDiffCLIPFluxConditioning", image_tokens=["5", 0], aligner=["6", 0], clip=["7", 0], text=text,
                  guidance=3.5, text_tokens=128),
        **flux_tail("8", 1024, prefix),
    }


DOTS = {"4": node("LoadImage", image="thinkdiff_dots.png")}


def clip_image_text() -> dict:
    return clip_flux(DOTS, "a dog", "ThinkDiff/clip_image_text")


def clip_two_images() -> dict:
    images = {
        "2": node("LoadImage", image="thinkdiff_blue_ball.png"),
        "3": node("LoadImage", image="thinkdiff_dots.png"),
        "4": node("ImageBatch", image1=["2", 0], image2=["3", 0]),
    }
    return clip_flux(images, "", "ThinkDiff/clip_two_images")


def clip_t5(model: Model, images: dict, text: str, prefix: str) -> dict:
    """ThinkDiff-CLIP into a T5-XXL model: aligned image tokens, then ``text``, through ThinkDiffCLIPT5Conditioning."""
    return {**clip_head(images), "7": model.text_encoder,
            "8": node("ThinkDiffCLIPT5Conditioning", image_tokens=["5", 0], aligner=["6", 0], clip=["7", 0], text=text),
            **t5_tail(model, "8", prefix)}


def clip_cogvideox() -> dict:
    """CogVideoX-5b (native, ComfyUI 0.21+) as the paper's diffusers pipeline runs it: 226 tokens, CFG 6, 49 frames at
    720x480, 50 DDIM steps on "trailing" timesteps. BasicScheduler "simple" gives exactly diffusers' trailing sigmas;
    VOIDSampler is core's DDIM for diffusers-trained CogVideoX models (KSampler's samplers scale the starting noise by
    sqrt(1 + sigma_max^2), about 4,500x with zero terminal SNR, which these models were not trained on)."""
    return {
        **clip_head(DOTS),
        "7": COGVIDEOX.text_encoder,
        "8": node("ThinkDiffCogVideoXConditioning", image_tokens=["5", 0], aligner=["6", 0], clip=["7", 0], negative_text="",
                  total_tokens=226,
                  text="A panda, dressed in a small red jacket and a tiny hat, sits on a wooden stool in a serene bamboo "
                       "forest, strumming a miniature acoustic guitar in the style of this picture."),
        **video_tail(COGVIDEOX, ["8", 0], ["8", 1], "ThinkDiff/clip_cogvideox"),
    }


LAYOUT = {"1": (20, 40), "2": (20, 240), "3": (20, 600), "4": (340, 400), "5": (660, 40), "6": (660, 700),
          "7": (660, 860), "8": (1100, 300), "9": (20, 40), "20": (1420, 480), "21": (1420, 40), "22": (1420, 620),
          "23": (1760, 200), "24": (1760, 620), "25": (2100, 200), "26": (2100, 320), "27": (1420, 200),
          "28": (1100, 620), "29": (1100, 760), "30": (1420, 880), "31": (1100, 900)}
SIZES = {"ThinkDiffVLMEncode": [400, 620], "ThinkDiffFluxConditioning": [340, 260], "ThinkDiffCLIPFluxConditioning": [340, 260],
         "ThinkDiffCogVideoXConditioning": [340, 300], "ThinkDiffT5Conditioning": [340, 200],
         "ThinkDiffCLIPT5Conditioning": [340, 200], "KSampler": [315, 262], "SaveImage": [400, 440]}


def node_height(node: dict) -> int:
    """The height the frontend draws a node at (at least): its title, slot rows and widget rows."""
    slots = max(len([i for i in node["inputs"] if "widget" not in i]), len(node["outputs"]))
    return max(node["size"][1], 40 + 24 * slots + 28 * len(node["widgets_values"]))


def unstack(nodes: list[dict], gap: int = 30) -> None:
    """Move nodes down their column (same x) until none overlaps the one above it; give each its drawn height."""
    for node in nodes:
        node["size"] = [node["size"][0], node_height(node)]
    bottom: dict[float, float] = {}
    for node in sorted(nodes, key=lambda n: (n["pos"][0], n["pos"][1])):
        x, y = node["pos"]
        node["pos"] = [x, max(y, bottom.get(x, y))]
        bottom[x] = node["pos"][1] + node["size"][1] + gap


def to_ui(api: dict, object_info: dict, title: str, note: str, models: dict) -> dict:
    extras = {nid: {"properties": {"Node name for S&R": node["class_type"], "models": models[node["class_type"]]}}
              for nid, node in api.items() if node["class_type"] in models}
    for nid, node in api.items():
        if node["class_type"] in SIZES:
            extras.setdefault(nid, {})["size"] = SIZES[node["class_type"]]
    ui = api_to_ui(api, object_info, LAYOUT, extras)
    note_id = ui["last_node_id"] + 1
    ui["nodes"].append({"id": note_id, "type": "MarkdownNote", "pos": [20, 1000], "size": [620, 360], "flags": {},
                        "order": len(ui["nodes"]), "mode": 0, "inputs": [], "outputs": [], "title": title,
                        "properties": {}, "widgets_values": [note], "color": "#432", "bgcolor": "#653"})
    ui["last_node_id"] = note_id
    unstack(ui["nodes"])
    return ui


def main() -> None:
    example_images()
    with tempfile.TemporaryDirectory() as tmp:
        base = prepare_base(Path(tmp))
        for image in IMAGES.glob("*.png"):  # LoadImage lists only files that exist
            (base / "input" / image.name).write_bytes(image.read_bytes())
        with ComfyServer(base) as server:
            object_info = server.object_info()
    dots = {"2": node("LoadImage", image="thinkdiff_dots.png")}
    cobsat, cobsat_video = COBSAT_INSTRUCTION + COBSAT_WORDS, COBSAT_VIDEO_INSTRUCTION + COBSAT_WORDS
    shipped = (  # name, graph, title, model, variant
        ("thinkdiff_lvlm_in_context", in_context(), "In-context reasoning (CoBSAT style)", FLUX, "lvlm"),
        ("thinkdiff_lvlm_image_instruction", image_instruction(), "Image + instruction", FLUX, "lvlm"),
        ("thinkdiff_lvlm_image_plus_text", image_plus_text(), "Image (to the VLM) + text (to Flux's T5)", FLUX, "lvlm"),
        ("thinkdiff_clip_flux_image_text", clip_image_text(), "Image + text composition", FLUX, "clip"),
        ("thinkdiff_clip_flux_two_images", clip_two_images(), "Two images", FLUX, "clip"),
        ("thinkdiff_clip_cogvideox", clip_cogvideox(), "Image + text → video (native CogVideoX, ComfyUI 0.21+)", COGVIDEOX,
         "clip"),
        ("thinkdiff_lvlm_chroma_in_context", lvlm_t5(CHROMA, cobsat, TWO_BALLS, "ThinkDiff/lvlm_chroma_in_context"),
         "In-context reasoning (CoBSAT style) → Chroma", CHROMA, "lvlm"),
        ("thinkdiff_lvlm_sd35_image_instruction", lvlm_t5(SD35, STYLE_INSTRUCTION, dots, "ThinkDiff/lvlm_sd35_image_instruction"),
         "Image + instruction → SD3.5", SD35, "lvlm"),
        ("thinkdiff_lvlm_ltxv_video_instruction", lvlm_t5(LTXV, VIDEO_STYLE_INSTRUCTION, dots, "ThinkDiff/lvlm_ltxv_video"),
         "Image + instruction → video (LTX-Video)", LTXV, "lvlm"),
        ("thinkdiff_lvlm_cogvideox_in_context", lvlm_t5(COGVIDEOX, cobsat_video, TWO_BALLS, "ThinkDiff/lvlm_cogvideox_video"),
         "In-context reasoning → video (native CogVideoX, ComfyUI 0.21+)", COGVIDEOX, "lvlm"),
        ("thinkdiff_clip_chroma_image_text", clip_t5(CHROMA, DOTS, "a dog", "ThinkDiff/clip_chroma_image_text"),
         "Image + text → Chroma", CHROMA, "clip"),
    )
    for name, graph, title, model, variant in shipped:
        path = WORKFLOWS / f"{name}.json"
        path.write_text(json.dumps(to_ui(graph, object_info, title, note(model, variant), model.links), indent=1) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
