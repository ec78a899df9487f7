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
MODELS = {
    "UNETLoader": [{"name": "flux1-dev.safetensors", "directory": "diffusion_models",
                    "url": "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors"}],
    "DualCLIPLoader": [
        {"name": "clip_l.safetensors", "directory": "text_encoders",
         "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"},
        {"name": "t5xxl_fp16.safetensors", "directory": "text_encoders",
         "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"}],
    "VAELoader": [{"name": "ae.safetensors", "directory": "vae",
                   "url": "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors"}],
}
# CogVideoX-5b's transformer and VAE in ComfyUI's native format have no single-file download we can vouch for:
# the note names the source (THUDM/CogVideoX-5b); only the T5 gets a download link.
COGVIDEOX_MODELS = {"CLIPLoader": MODELS["DualCLIPLoader"][1:]}
SETUP_NOTE = """## ThinkDiff-LVLM setup
1. **Qwen2-VL-7B-Instruct** (whole folder) → `ComfyUI/models/LLM/Qwen2-VL-7B-Instruct/`
   `huggingface-cli download Qwen/Qwen2-VL-7B-Instruct --local-dir ComfyUI/models/LLM/Qwen2-VL-7B-Instruct`
2. **ThinkDiff aligner** → `ComfyUI/models/thinkdiff/thinkdiff_lvlm.safetensors`:
   download the release checkpoint from https://huggingface.co/Mifucius/ThinkDiff and convert it once with
   `python -m thinkdiff convert-aligner thinkdiff_lvlm.pth ComfyUI/models/thinkdiff/thinkdiff_lvlm.safetensors`
   (run in `ComfyUI/custom_nodes/ComfyUI-ThinkDiff`).
3. **Flux.1-dev**: flux1-dev.safetensors (diffusion_models), clip_l + t5xxl_fp16 (text_encoders), ae.safetensors (vae).

The VLM's answer appears on the *ThinkDiff VLM Think* node while it generates.

**GPU memory** (the VLM loader's *weights*; ComfyUI unloads the VLM before Flux loads): 24 GB cards: default (bf16,
{default} GB); 12-16 GB: fp8_e4m3fn ({fp8_e4m3fn} GB); 8 GB: bnb_nf4 ({bnb_nf4} GB, `pip install bitsandbytes`). `python -m
thinkdiff doctor` recommends one for your GPU.""".format(**QWEN2_VL_7B_GB)
CLIP_SETUP_NOTE = """## ThinkDiff-CLIP setup
1. **Vision encoder** (BLIP-2's EVA ViT-g, ~2 GB) → `ComfyUI/models/thinkdiff/blip2_vision.safetensors`:
   download https://huggingface.co/Salesforce/blip2-flan-t5-xxl, then (in `ComfyUI/custom_nodes/ComfyUI-ThinkDiff`)
   `python -m thinkdiff extract-vision PATH/blip2-flan-t5-xxl ComfyUI/models/thinkdiff/blip2_vision.safetensors`
   (the 15 GB folder can be deleted afterwards).
2. **ThinkDiff-CLIP aligner** → `ComfyUI/models/thinkdiff/thinkdiff_clip.safetensors`: convert the release from
   https://huggingface.co/Mifucius/ThinkDiff with `python -m thinkdiff convert-aligner thinkdiff_clip.pth ...`.
3. **Diffusion model and text encoders** as linked on the loader nodes (Flux.1-dev). For the CogVideoX workflow
   (native CogVideoX needs ComfyUI 0.21 or newer): CogVideoX-5b (https://huggingface.co/THUDM/CogVideoX-5b) as a
   ComfyUI diffusion model + VAE, and t5xxl_fp16 with CLIPLoader type cogvideox. It samples as the paper's diffusers
   pipeline: 50 DDIM steps (core's *VOIDSampler*, the DDIM of diffusers-trained CogVideoX models) on BasicScheduler
   *simple* (= diffusers' trailing timesteps), CFG 6. KSampler is not equivalent for this model type.

Flux workflows: change the size only on the *width* / *height* nodes; they feed both the latent and ModelSamplingFlux
(diffusers' resolution-dependent schedule shift, as in the paper)."""


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


def flux_tail(positive: str, size: int, prefix: str) -> dict:
    """Flux.1-dev sampling as in the paper: guidance 3.5 (in the conditioning), 28 steps, cfg 1, and diffusers' resolution-
    dependent schedule shift (ModelSamplingFlux, as ComfyUI's own Flux templates). One pair of Int nodes feeds both the
    latent's and the shift's width and height, so a size change cannot leave the schedule behind."""
    return {
        "20": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": [positive, 0]}},
        "21": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "22": {"class_type": "EmptySD3LatentImage", "inputs": {"width": ["28", 0], "height": ["29", 0], "batch_size": 1}},
        "23": {"class_type": "KSampler", "inputs": {
            "model": ["27", 0], "seed": 0, "steps": 28, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": [positive, 0], "negative": ["20", 0], "latent_image": ["22", 0], "denoise": 1.0}},
        "24": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "25": {"class_type": "VAEDecode", "inputs": {"samples": ["23", 0], "vae": ["24", 0]}},
        "26": {"class_type": "SaveImage", "inputs": {"images": ["25", 0], "filename_prefix": prefix}},
        "27": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["21", 0], "max_shift": 1.15, "base_shift": 0.5,
                                                             "width": ["28", 0], "height": ["29", 0]}},
        "28": {"class_type": "PrimitiveInt", "inputs": {"value": size}, "_meta": {"title": "width"}},
        "29": {"class_type": "PrimitiveInt", "inputs": {"value": size}, "_meta": {"title": "height"}},
    }


def thinkdiff_head(prompt: str, images: list, picture_labels: str = "auto", min_pixels: int = REFERENCE_MIN_PIXELS,
                   max_pixels: int = REFERENCE_MAX_PIXELS) -> dict:
    return {
        "1": {"class_type": "ThinkDiffVLMLoader", "inputs": {"model": "Qwen2-VL-7B-Instruct", "dtype": "auto",
                                                             "device": "default", "weights": "default"}},
        "5": {"class_type": "ThinkDiffVLMEncode", "inputs": {
            "vlm": ["1", 0], "prompt": prompt, "seed": 42, "max_new_tokens": 128, "temperature": 0.6, "top_p": 0.9,
            "greedy": False, "stop_at_eos": False, "picture_labels": picture_labels, "min_pixels": min_pixels,
            "max_pixels": max_pixels, "images": images}},
        "6": {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": "thinkdiff_lvlm.safetensors"}},
        "7": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "8": {"class_type": "ThinkDiffFluxConditioning", "inputs": {
            "features": ["5", 0], "aligner": ["6", 0], "guidance": 3.5, "text": "", "text_tokens": 128, "clip": ["7", 0]}},
    }


def in_context() -> dict:
    graph = {
        "2": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_blue_ball.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_brown_ball.png"}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}},
    }
    prompt = COBSAT_INSTRUCTION + "Word 1: blue, <image>\n\nWord 2: brown, <image>\n\nWord 3: orange, "
    return {**graph, **thinkdiff_head(prompt, ["4", 0]), **flux_tail("8", 512, "ThinkDiff/in_context")}


def image_instruction() -> dict:
    graph = {"2": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_dots.png"}}}
    return {**graph, **thinkdiff_head(STYLE_INSTRUCTION, ["2", 0]), **flux_tail("8", 1024, "ThinkDiff/image_instruction")}


def image_plus_text() -> dict:
    """The reference's image + extra-text demo (test_mllama_t5_decoder_flux_multi_image_input.py): Qwen sees the image
    alone (no instruction, max_pixels 65,536); the question goes only to Flux's T5, appended after the 128 LVLM tokens,
    and sets the pooled vector; 512x512."""
    graph = {"2": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_sign.png"}}}
    head = thinkdiff_head("", ["2", 0], max_pixels=65536)
    head["8"]["inputs"]["text"] = "Reconstruct the texts in this image."
    return {**graph, **head, **flux_tail("8", 512, "ThinkDiff/image_plus_text")}


def clip_head(images: dict, aligner: str = "thinkdiff_clip.safetensors") -> dict:
    return {
        **images,
        "9": {"class_type": "ThinkDiffVisionLoader", "inputs": {"vision_name": "blip2_vision.safetensors", "dtype": "auto",
                                                                "device": "default"}},
        "5": {"class_type": "ThinkDiffImageEncode", "inputs": {"vision": ["9", 0], "images": ["4", 0]}},
        "6": {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": aligner}},
    }


def clip_flux(images: dict, text: str, prefix: str) -> dict:
    return {
        **clip_head(images),
        "7": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "8": {"class_type": "ThinkDiffCLIPFluxConditioning", "inputs": {
            "image_tokens": ["5", 0], "aligner": ["6", 0], "clip": ["7", 0], "text": text, "guidance": 3.5,
            "text_tokens": 128}},
        **flux_tail("8", 1024, prefix),
    }


def clip_image_text() -> dict:
    images = {"4": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_dots.png"}}}
    return clip_flux(images, "a dog", "ThinkDiff/clip_image_text")


def clip_two_images() -> dict:
    images = {
        "2": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_blue_ball.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_dots.png"}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}},
    }
    return clip_flux(images, "", "ThinkDiff/clip_two_images")


def clip_cogvideox() -> dict:
    """CogVideoX-5b (native, ComfyUI 0.21+) as the paper's diffusers pipeline runs it: 226 tokens, CFG 6, 49 frames at
    720x480, 50 DDIM steps on "trailing" timesteps. BasicScheduler "simple" gives exactly diffusers' trailing sigmas;
    VOIDSampler is core's DDIM for diffusers-trained CogVideoX models (KSampler's samplers scale the starting noise by
    sqrt(1 + sigma_max^2), about 4,500x with zero terminal SNR, which these models were not trained on)."""
    images = {"4": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_dots.png"}}}
    return {
        **clip_head(images),
        "7": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl_fp16.safetensors", "type": "cogvideox", "device": "default"}},
        "8": {"class_type": "ThinkDiffCogVideoXConditioning", "inputs": {
            "image_tokens": ["5", 0], "aligner": ["6", 0], "clip": ["7", 0], "negative_text": "", "total_tokens": 226,
            "text": "A panda, dressed in a small red jacket and a tiny hat, sits on a wooden stool in a serene bamboo forest, "
                    "strumming a miniature acoustic guitar in the style of this picture."}},
        "21": {"class_type": "UNETLoader", "inputs": {"unet_name": "cogvideox_5b_bf16.safetensors", "weight_dtype": "default"}},
        "22": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 720, "height": 480, "length": 49, "batch_size": 1}},
        "23": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["30", 0], "guider": ["27", 0], "sampler": ["29", 0], "sigmas": ["28", 0], "latent_image": ["22", 0]}},
        "24": {"class_type": "VAELoader", "inputs": {"vae_name": "cogvideox_vae.safetensors"}},
        "25": {"class_type": "VAEDecode", "inputs": {"samples": ["23", 0], "vae": ["24", 0]}},
        "26": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["25", 0], "filename_prefix": "ThinkDiff/clip_cogvideox",
                                                            "fps": 8.0, "lossless": False, "quality": 90, "method": "default"}},
        "27": {"class_type": "CFGGuider", "inputs": {"model": ["21", 0], "positive": ["8", 0], "negative": ["8", 1], "cfg": 6.0}},
        "28": {"class_type": "BasicScheduler", "inputs": {"model": ["21", 0], "scheduler": "simple", "steps": 50, "denoise": 1.0}},
        "29": {"class_type": "VOIDSampler", "inputs": {}},
        "30": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
    }


LAYOUT = {"1": (20, 40), "2": (20, 240), "3": (20, 600), "4": (340, 400), "5": (660, 40), "6": (660, 700),
          "7": (660, 860), "8": (1100, 300), "9": (20, 40), "20": (1420, 480), "21": (1420, 40), "22": (1420, 620),
          "23": (1760, 200), "24": (1760, 620), "25": (2100, 200), "26": (2100, 320), "27": (1420, 200),
          "28": (1100, 620), "29": (1100, 760), "30": (1420, 880)}
SIZES = {"ThinkDiffVLMEncode": [400, 620], "ThinkDiffFluxConditioning": [340, 260], "ThinkDiffCLIPFluxConditioning": [340, 260],
         "ThinkDiffCogVideoXConditioning": [340, 300], "KSampler": [315, 262], "SaveImage": [400, 440]}


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
    return ui


def main() -> None:
    example_images()
    with tempfile.TemporaryDirectory() as tmp:
        base = prepare_base(Path(tmp))
        for image in IMAGES.glob("*.png"):  # LoadImage lists only files that exist
            (base / "input" / image.name).write_bytes(image.read_bytes())
        with ComfyServer(base) as server:
            object_info = server.object_info()
    shipped = (
        ("thinkdiff_lvlm_in_context", in_context(), "In-context reasoning (CoBSAT style)", SETUP_NOTE, MODELS),
        ("thinkdiff_lvlm_image_instruction", image_instruction(), "Image + instruction", SETUP_NOTE, MODELS),
        ("thinkdiff_lvlm_image_plus_text", image_plus_text(), "Image (to the VLM) + text (to Flux's T5)", SETUP_NOTE, MODELS),
        ("thinkdiff_clip_flux_image_text", clip_image_text(), "Image + text composition", CLIP_SETUP_NOTE, MODELS),
        ("thinkdiff_clip_flux_two_images", clip_two_images(), "Two images", CLIP_SETUP_NOTE, MODELS),
        ("thinkdiff_clip_cogvideox", clip_cogvideox(), "Image + text → video (native CogVideoX, ComfyUI 0.21+)",
         CLIP_SETUP_NOTE, COGVIDEOX_MODELS),
    )
    for name, graph, title, note, models in shipped:
        path = WORKFLOWS / f"{name}.json"
        path.write_text(json.dumps(to_ui(graph, object_info, title, note, models), indent=1) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
