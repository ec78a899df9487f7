"""ThinkDiff-CLIP: image tokens from a vision tower, aligned, with T5 text -> Flux and CogVideoX conditioning."""

from __future__ import annotations

import importlib.util

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ..thinkdiff.errors import ThinkDiffError
from ..thinkdiff.images import as_pil_list
from ..thinkdiff.vision import VisionTokenEncoder
from .alignment import aligned_conditioning
from .comfy_models import load_for_use, patcher_for, placement, placement_inputs, thinkdiff_file_path, thinkdiff_files
from .text_encoding import flux_text, t5_encode
from .types import ALIGNER, CATEGORY, IMAGE_TOKENS, VISION

VISION_SOURCE = "the vision encoder"
COGVIDEOX_TOKENS = 226  # CogVideoX's text length (65 image tokens + 161 text tokens in the reference)
WRAPPER_URL = "https://github.com/kijai/ComfyUI-CogVideoXWrapper"
ENCODE_CHUNK = 8  # images per forward pass: 8x the throughput of one at a time on a GPU, Cancel between chunks


class ThinkDiffVisionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffVisionLoader",
            display_name="ThinkDiff Vision Encoder Loader (BLIP-2 EVA ViT-g)",
            category=CATEGORY,
            description="Loads ThinkDiff-CLIP's image encoder (BLIP-2's vision tower, cut out of Salesforce/blip2-flan-t5-xxl "
                        "with `python -m thinkdiff extract-vision`) from ComfyUI/models/thinkdiff.",
            inputs=[
                io.Combo.Input("vision_name", options=thinkdiff_files(vision=True),
                               tooltip="A ThinkDiff vision-encoder file in ComfyUI/models/thinkdiff (e.g. blip2_vision.safetensors)."),
                *placement_inputs("vision encoder"),
            ],
            outputs=[VISION.Output(display_name="vision")],
        )

    @classmethod
    def execute(cls, vision_name: str, dtype: str, device: str) -> io.NodeOutput:
        target, weights_dtype = placement(dtype, device)
        encoder = VisionTokenEncoder.from_file(thinkdiff_file_path(vision_name), dtype=weights_dtype)
        return io.NodeOutput(patcher_for(encoder, target))


class ThinkDiffImageEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffImageEncode",
            display_name="ThinkDiff Image Encode",
            category=CATEGORY,
            description="Image tokens for ThinkDiff-CLIP: each image is resized to 224x224 and gives CLS + an 8x8 grid "
                        "of patch tokens (65 tokens). A batch gives the images in order.",
            inputs=[VISION.Input("vision", tooltip="The vision encoder from ThinkDiff Vision Encoder Loader."),
                    io.Image.Input("images", tooltip="One or more images (a batch); each is encoded separately, in order.")],
            outputs=[IMAGE_TOKENS.Output(display_name="image_tokens")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, vision, images: torch.Tensor) -> io.NodeOutput:
        pictures = as_pil_list(images)
        encoder: VisionTokenEncoder = load_for_use(vision)
        progress = comfy.utils.ProgressBar(len(pictures), node_id=cls.hidden.unique_id)
        tokens = []
        for start in range(0, len(pictures), ENCODE_CHUNK):
            comfy.model_management.throw_exception_if_processing_interrupted()
            chunk = pictures[start:start + ENCODE_CHUNK]
            tokens.append(encoder.encode(chunk).float().cpu())
            progress.update(len(chunk))
        return io.NodeOutput(torch.cat(tokens))


class ThinkDiffCLIPFluxConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffCLIPFluxConditioning",
            display_name="ThinkDiff-CLIP → Flux Conditioning",
            category=CATEGORY,
            description="The paper's image + text composition for Flux: aligned image tokens of each image in order, then "
                        "Flux's T5 encoding of the text padded to 128 tokens (65 + 128 = 193 tokens for one image, 258 for "
                        "two); the pooled vector is CLIP-L of the same text.",
            inputs=[
                IMAGE_TOKENS.Input("image_tokens", tooltip="Image tokens from ThinkDiff Image Encode (images in order)."),
                ALIGNER.Input("aligner", tooltip="The ThinkDiff-CLIP aligner (thinkdiff_clip.safetensors)."),
                io.Clip.Input("clip", tooltip="Flux text encoders: DualCLIPLoader (clip_l + t5xxl, type flux)."),
                io.String.Input("text", multiline=True, default="",
                                tooltip="Text composed with the images, e.g. 'a dog in the style of this picture'. May be empty."),
                io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1,
                               tooltip="Flux-dev distilled guidance (paper: 3.5)."),
                io.Int.Input("text_tokens", default=128, min=1, max=512,
                             tooltip="T5 length of the text, padded or truncated (reference: 128)."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, image_tokens: torch.Tensor, aligner, clip, text: str, guidance: float,
                text_tokens: int) -> io.NodeOutput:
        text_cond, pooled = flux_text(clip, text, text_tokens)
        cond = aligned_conditioning(aligner, image_tokens, VISION_SOURCE, text_cond)
        return io.NodeOutput([[cond, {"pooled_output": pooled.to(cond), "guidance": guidance}]])


def cogvideox_embeds(image_tokens: torch.Tensor, aligner, clip, text: str, negative_text: str,
                     total_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, total, D] positive (aligned images, then T5 text filling the rest) and negative (T5 of negative_text)."""
    image_length = image_tokens.shape[0] * image_tokens.shape[1]
    text_length = total_tokens - image_length
    if text_length < 1:
        raise ThinkDiffError(f"{image_tokens.shape[0]} image(s) give {image_length} tokens, leaving no room for text in "
                             f"{total_tokens}: use fewer images (CogVideoX reads {COGVIDEOX_TOKENS} tokens).")
    positive = aligned_conditioning(aligner, image_tokens, VISION_SOURCE, t5_encode(clip, text, text_length)[0])
    negative = t5_encode(clip, negative_text, total_tokens)[0].to(positive)
    return positive, negative


COGVIDEOX_INPUTS = [
    IMAGE_TOKENS.Input("image_tokens", tooltip="Image tokens from ThinkDiff Image Encode (images in order)."),
    ALIGNER.Input("aligner", tooltip="The ThinkDiff-CLIP aligner (thinkdiff_clip.safetensors)."),
    io.Clip.Input("clip", tooltip="CogVideoX's T5-XXL text encoder (CLIPLoader with t5xxl)."),
    io.String.Input("text", multiline=True, default="", tooltip="The video prompt; it fills the tokens after the images."),
    io.String.Input("negative_text", multiline=True, default="",
                    tooltip="Negative prompt, encoded alone to the same length (diffusers' default is empty)."),
    io.Int.Input("total_tokens", default=COGVIDEOX_TOKENS, min=2, max=1024,
                 tooltip="Conditioning length: 226 for CogVideoX (65 image tokens + 161 text tokens for one image)."),
]


def native_cogvideox_available() -> bool:
    """Native CogVideoX arrived in ComfyUI 0.21 (comfy/ldm/cogvideo)."""
    return importlib.util.find_spec("comfy.ldm.cogvideo") is not None


class ThinkDiffCogVideoXConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffCogVideoXConditioning",
            display_name="ThinkDiff-CLIP → CogVideoX Conditioning",
            category=CATEGORY,
            description="Image + text → video conditioning for ComfyUI's native CogVideoX (ComfyUI 0.21 or newer): aligned "
                        "image tokens then T5 text, 226 tokens in all, and a negative of the same shape.",
            inputs=COGVIDEOX_INPUTS,
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, image_tokens, aligner, clip, text: str, negative_text: str, total_tokens: int) -> io.NodeOutput:
        if not native_cogvideox_available():
            raise ThinkDiffError("this ComfyUI has no native CogVideoX (it arrived in ComfyUI 0.21): update ComfyUI, or use "
                                 f"'ThinkDiff-CLIP → CogVideoX Wrapper Embeds' with {WRAPPER_URL}.")
        positive, negative = cogvideox_embeds(image_tokens, aligner, clip, text, negative_text, total_tokens)
        return io.NodeOutput([[positive, {}]], [[negative, {}]])


class ThinkDiffCogVideoXWrapperEmbeds(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffCogVideoXWrapperEmbeds",
            display_name="ThinkDiff-CLIP → CogVideoX Wrapper Embeds",
            category=CATEGORY,
            description=f"For kijai's ComfyUI-CogVideoXWrapper ({WRAPPER_URL}): its CogVideoSampler takes bare (1, 226, 4096) "
                        "tensors on sockets named CONDITIONING. Connect these outputs only to that sampler, not to KSampler.",
            inputs=COGVIDEOX_INPUTS,
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, image_tokens, aligner, clip, text: str, negative_text: str, total_tokens: int) -> io.NodeOutput:
        positive, negative = cogvideox_embeds(image_tokens, aligner, clip, text, negative_text, total_tokens)
        return io.NodeOutput(positive, negative)
