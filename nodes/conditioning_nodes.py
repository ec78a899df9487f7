"""The aligner: loading it, and turning VLM features into Flux conditioning."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.ops
import torch
from comfy_api.latest import io

from ..thinkdiff.aligner import Aligner
from ..thinkdiff.aligner_files import load_aligner_weights
from ..thinkdiff.errors import ThinkDiffError
from ..thinkdiff.vlm import VLMOutput
from .alignment import aligned_conditioning
from .comfy_models import patcher_for, thinkdiff_file_path, thinkdiff_files
from .text_encoding import FLUX_POOLED_WIDTH, flux_pooled, flux_text
from .types import ALIGNER, CATEGORY, FEATURES


class ThinkDiffAlignerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffAlignerLoader",
            display_name="ThinkDiff Aligner Loader",
            category=CATEGORY,
            description="Loads a ThinkDiff aligner (.safetensors, or a release .pth holding only tensors) "
                        "from ComfyUI/models/thinkdiff.",
            inputs=[io.Combo.Input("aligner_name", options=thinkdiff_files(vision=False),
                                   tooltip="Aligner weights in ComfyUI/models/thinkdiff, e.g. thinkdiff_lvlm.safetensors.")],
            outputs=[ALIGNER.Output(display_name="aligner")],
        )

    @classmethod
    def execute(cls, aligner_name: str) -> io.NodeOutput:
        weights = load_aligner_weights(thinkdiff_file_path(aligner_name))
        aligner = Aligner.from_state_dict(weights.state, operations=comfy.ops.manual_cast, dtype=torch.float32)
        aligner.description = f"{aligner_name} ({weights.describe()})"
        return io.NodeOutput(patcher_for(aligner, mm.get_torch_device()))


class ThinkDiffFluxConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffFluxConditioning",
            display_name="ThinkDiff → Flux Conditioning",
            category=CATEGORY,
            description="Aligns the VLM's generated-token features into Flux's T5 space. As in the paper the aligned "
                        "tokens replace the T5 prompt, and the pooled vector is CLIP-L of the empty prompt (zeros "
                        "without a CLIP). Optional text is appended as Flux T5 tokens (the paper's image + text variant).",
            inputs=[
                FEATURES.Input("features", tooltip="The VLM's generated-token features from ThinkDiff VLM Think."),
                ALIGNER.Input("aligner", tooltip="The ThinkDiff-LVLM aligner (thinkdiff_lvlm.safetensors)."),
                io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1,
                               tooltip="Flux-dev distilled guidance (paper: 3.5)."),
                io.String.Input("text", multiline=True, default="",
                                tooltip="Optional text appended after the aligned tokens as Flux T5 tokens; "
                                        "the pooled vector then comes from this text. Needs the clip input."),
                io.Int.Input("text_tokens", default=128, min=1, max=512,
                             tooltip="T5 length of the appended text, padded or truncated (reference: 128)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The Flux text encoders (DualCLIPLoader, type flux) for the pooled vector and "
                                      "the appended text."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, features: VLMOutput, aligner, guidance: float, text: str, text_tokens: int,
                clip=None) -> io.NodeOutput:
        if text.strip():
            if clip is None:
                raise ThinkDiffError("text is set but no CLIP is connected: connect the Flux DualCLIPLoader to clip, "
                                     "or clear the text.")
            text_cond, pooled = flux_text(clip, text, text_tokens)
            cond = aligned_conditioning(aligner, features.features, "the VLM", text_cond)
        elif clip is not None:
            t5_width, pooled = flux_pooled(clip, "")
            cond = aligned_conditioning(aligner, features.features, "the VLM", t5_width=t5_width)
        else:
            pooled = torch.zeros(1, FLUX_POOLED_WIDTH)
            cond = aligned_conditioning(aligner, features.features, "the VLM")
        return io.NodeOutput([[cond, {"pooled_output": pooled.to(cond), "guidance": guidance}]])
