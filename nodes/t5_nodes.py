"""ThinkDiff into every T5-XXL model in ComfyUI (SD3/3.5, Chroma, PixArt-Σ, LTX-Video v1, Mochi, CogVideoX).

One node per variant (VLM features, CLIP image tokens); the connected CLIP's kind picks the layout from the library's
table (``thinkdiff.t5_families``), and the text goes through the CLIP exactly as CLIPTextEncode sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from comfy_api.latest import io

from ..thinkdiff.errors import ThinkDiffError
from ..thinkdiff.t5_families import SUPPORTED, T5Family, family_for, join_t5, text_min_length
from ..thinkdiff.vlm import VLMOutput
from .alignment import aligned_conditioning
from .clip_nodes import VISION_SOURCE
from .text_encoding import T5
from .types import ALIGNER, CATEGORY, FEATURES, IMAGE_TOKENS

MIN_LENGTH = f"{T5}_min_length"  # ComfyUI's tokenizer option: pad the T5 prompt to at least this many tokens


def clip_family(clip: Any) -> T5Family:
    """The T5 family of ``clip`` (by its tokenizer's class, which comfy.sd.load_clip picks per CLIP type)."""
    family = family_for(type(clip.tokenizer).__name__)
    if getattr(clip.cond_stage_model, T5, "") is None:  # SD3's encoder with only CLIP-L/G loaded
        raise ThinkDiffError(f"the connected {family.name} text encoder has no T5-XXL loaded: add t5xxl (TripleCLIPLoader "
                             "clip_l + clip_g + t5xxl, or CLIPLoader type sd3 with t5xxl alone).")
    return family


def t5_family_conditioning(clip: Any, text: str, aligned_tokens: int,
                           align: Callable[[int], torch.Tensor]) -> list[list]:
    """CLIPTextEncode's conditioning of ``text`` for ``clip``'s model, with ``align(T5 width)`` ([1, aligned_tokens, D])
    at the start of its T5 part; the text fills the family's minimum T5 length (no text part when the aligned tokens
    reach it and there is no text)."""
    min_length = text_min_length(clip_family(clip), aligned_tokens, text)
    tokens = clip.tokenize(text, tokenizer_options={MIN_LENGTH: max(min_length, 1)})
    t5_tokens = len(tokens[T5][0])
    encoded = clip.encode_from_tokens_scheduled(tokens)
    aligned = align(encoded[0][0].shape[-1])
    return [list(join_t5(cond, extras, t5_tokens, aligned, keep_text=min_length > 0)) for cond, extras in encoded]


def _inputs(tokens: io.Input) -> list[io.Input]:
    return [
        tokens,
        ALIGNER.Input("aligner", tooltip="The ThinkDiff aligner of this variant (thinkdiff_lvlm or thinkdiff_clip)."),
        io.Clip.Input("clip", tooltip=f"The T5-XXL text encoder of the model you sample: {SUPPORTED}. Its kind sets the "
                                      "conditioning's layout (as CLIPTextEncode's for that model)."),
        io.String.Input("text", multiline=True, default="",
                        tooltip="Optional text after the aligned tokens (the paper's image + text); it also fills the "
                                "model's minimum T5 length, and gives SD3's CLIP-L/G part and pooled vector."),
    ]


DESCRIPTION = (f"Follows the connected CLIP's kind ({SUPPORTED}): the conditioning is exactly what CLIPTextEncode gives for "
               "that model (keys, pooled vector, attention mask, minimum length), with the aligned tokens at the start "
               "of its T5 part and the text after them. Use CLIPTextEncode for the negative.")


class ThinkDiffT5Conditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffT5Conditioning",
            display_name="ThinkDiff → T5 Model Conditioning (SD3.5, Chroma, LTX-Video, CogVideoX, ...)",
            category=CATEGORY,
            description="ThinkDiff-LVLM into any T5-XXL model: the VLM's aligned answer tokens. " + DESCRIPTION,
            inputs=_inputs(FEATURES.Input("features", tooltip="The VLM's generated-token features from ThinkDiff VLM Think.")),
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, features: VLMOutput, aligner, clip, text: str) -> io.NodeOutput:
        return io.NodeOutput(t5_family_conditioning(
            clip, text, features.num_tokens,
            lambda width: aligned_conditioning(aligner, features.features, "the VLM", t5_width=width)))


class ThinkDiffCLIPT5Conditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffCLIPT5Conditioning",
            display_name="ThinkDiff-CLIP → T5 Model Conditioning (SD3.5, Chroma, LTX-Video, CogVideoX, ...)",
            category=CATEGORY,
            description="ThinkDiff-CLIP into any T5-XXL model: aligned image tokens (65 per image, in order). " + DESCRIPTION,
            inputs=_inputs(IMAGE_TOKENS.Input("image_tokens", tooltip="Image tokens from ThinkDiff Image Encode.")),
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, image_tokens: torch.Tensor, aligner, clip, text: str) -> io.NodeOutput:
        return io.NodeOutput(t5_family_conditioning(
            clip, text, image_tokens.shape[0] * image_tokens.shape[1],
            lambda width: aligned_conditioning(aligner, image_tokens, VISION_SOURCE, t5_width=width)))
