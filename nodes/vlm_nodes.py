"""Loading Qwen2-VL and letting it think: the ThinkDiff-LVLM encode step."""

from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import torch
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io, ui

from ..thinkdiff.images import REFERENCE_MAX_PIXELS, REFERENCE_MIN_PIXELS, as_pil_list
from ..thinkdiff.prompts import IMAGE_PLACEHOLDER
from ..thinkdiff.qwen2_vl_sizes import Shapes
from ..thinkdiff.sampling_options import PAPER_SAMPLING, SamplingOptions
from ..thinkdiff.think_memory import think_bytes, typical_think_bytes
from ..thinkdiff.vlm import QwenVLEncoder, TokenCallback, VLMOutput, VLMRequest
from ..thinkdiff.vram_advice import QWEN2_VL_7B_GB as SIZE_GB
from ..thinkdiff.weight_formats import WEIGHT_FORMATS, is_bitsandbytes
from .comfy_models import check_fits, load_for_use, patcher_for, placement, placement_inputs, vlm_folder_path, vlm_folders
from .streaming import load_buffers_whole, make_streamable
from .types import CATEGORY, FEATURES, VLM


class ThinkDiffVLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffVLMLoader",
            display_name="ThinkDiff VLM Loader (Qwen2-VL)",
            category=CATEGORY,
            description="Loads a Qwen2-VL-Instruct Hugging Face folder from ComfyUI/models/LLM. "
                        "ComfyUI's memory manager moves it to the GPU only while it encodes.",
            inputs=[
                io.Combo.Input("model", options=vlm_folders(),
                               tooltip="A Qwen2-VL-Instruct folder under ComfyUI/models/LLM "
                                       "(e.g. Qwen2-VL-7B-Instruct from https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct)."),
                *placement_inputs("VLM"),
                io.Combo.Input("weights", options=list(WEIGHT_FORMATS), default="default",
                               tooltip=f"How the weights are stored (Qwen2-VL-7B sizes). default: as dtype (bf16 "
                                       f"{SIZE_GB['default']} GB). fp8_e4m3fn: {SIZE_GB['fp8_e4m3fn']} GB, no extra "
                                       f"package, any GPU or the CPU. bnb_8bit (about {SIZE_GB['bnb_8bit']} GB) and bnb_nf4 "
                                       f"(about {SIZE_GB['bnb_nf4']} GB, for 8 GB cards): need `pip install bitsandbytes`. "
                                       "default and fp8 stream layers from CPU RAM when the GPU is too small."),
            ],
            outputs=[VLM.Output(display_name="vlm")],
        )

    @classmethod
    def execute(cls, model: str, dtype: str, device: str, weights: str = "default") -> io.NodeOutput:
        target, weights_dtype = placement(dtype, device)
        return io.NodeOutput(vlm_patcher(vlm_folder_path(model), target, weights_dtype, weights))


def vlm_patcher(folder: Path, target: torch.device, dtype: torch.dtype, weights: str) -> ModelPatcher:
    """The VLM in ``folder`` handed to ComfyUI's memory manager for ``target`` (what the loader node outputs)."""
    encoder = QwenVLEncoder.from_folder(folder, dtype=dtype, weights=weights)
    if not is_bitsandbytes(encoder.weights):
        make_streamable(encoder.model)
    encoder.manual_cast_dtype = dtype  # ComfyUI 0.33 reserves a cast buffer per streamed layer stored in another dtype
    patcher = patcher_for(encoder, target)
    load_buffers_whole(patcher)
    shapes = Shapes.of(encoder.model.config)
    check_fits(patcher, encoder.weights, typical_think_bytes(shapes, _casts_weights(encoder), dtype.itemsize))
    return patcher


def _casts_weights(encoder: QwenVLEncoder) -> bool:
    """Whether a forward may make working-precision copies of weights: fp8 always, default when streamed."""
    return not is_bitsandbytes(encoder.weights)


def think_memory_required(encoder: QwenVLEncoder, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> int:
    """Bytes to keep free beside the weights for thinking on ``inputs`` (``thinkdiff.think_memory``)."""
    dtype_bytes = encoder.model.dtype.itemsize
    batch, prompt = inputs["input_ids"].shape
    patches = inputs["pixel_values"].shape[0] if "pixel_values" in inputs else 0
    cast = max(p.numel() for p in encoder.parameters()) * dtype_bytes if _casts_weights(encoder) else 0
    return think_bytes(Shapes.of(encoder.model.config), prompt, max_new_tokens, patches, batch, dtype_bytes) + cast


class ThinkDiffVLMEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffVLMEncode",
            display_name="ThinkDiff VLM Think",
            category=CATEGORY,
            description="Qwen2-VL reads the images and the prompt and writes an answer; the final-norm hidden states "
                        "of the generated tokens are the features for the ThinkDiff aligner. Defaults are the paper's "
                        "(128 tokens, temperature 0.6, top-p 0.9, sampling past end-of-text).",
            inputs=[
                VLM.Input("vlm", tooltip="The Qwen2-VL model from ThinkDiff VLM Loader."),
                io.String.Input("prompt", multiline=True,
                                default="Create a diffusion prompt for a dog in the style of this picture. "
                                        "Do not use 'similar to the image'",
                                tooltip=f"Instruction for the VLM. Write {IMAGE_PLACEHOLDER} where each image goes "
                                        "(in batch order); without placeholders all images come first. May be empty when "
                                        "images are connected: the VLM then sees the images alone (the paper's image + "
                                        "text demo, whose text goes to Flux's T5 instead)."),
                io.Int.Input("seed", default=PAPER_SAMPLING.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the VLM's sampling. Changing only the sampler seed does not re-run the VLM."),
                io.Int.Input("max_new_tokens", default=PAPER_SAMPLING.max_new_tokens, min=1, max=2048,
                             tooltip="Tokens the VLM generates = conditioning length. The paper uses 128."),
                io.Float.Input("temperature", default=PAPER_SAMPLING.temperature, min=0.01, max=2.0, step=0.01,
                               tooltip="Sampling temperature (paper: 0.6). Ignored when greedy is on."),
                io.Float.Input("top_p", default=PAPER_SAMPLING.top_p, min=0.01, max=1.0, step=0.01,
                               tooltip="Nucleus sampling (paper: 0.9). Ignored when greedy is on."),
                io.Boolean.Input("greedy", default=PAPER_SAMPLING.greedy,
                                 tooltip="Deterministic greedy decoding instead of sampling."),
                io.Boolean.Input("stop_at_eos", default=PAPER_SAMPLING.stop_at_eos,
                                 tooltip="Stop when the answer ends. Off (the paper) always generates max_new_tokens "
                                         "tokens, continuing past the end of the answer."),
                io.Combo.Input("picture_labels", options=["auto", "on", "off"], default="auto",
                               tooltip="Prefix images with 'Picture k: ' (Qwen2-VL's add_vision_id). auto = when there "
                                       "are several images, as in the paper's in-context (CoBSAT) prompts."),
                io.Int.Input("min_pixels", default=REFERENCE_MIN_PIXELS, min=28 * 28, max=REFERENCE_MAX_PIXELS, step=28 * 28,
                             tooltip="Smaller images are upscaled to at least this many pixels (reference: 3136 = 56*56, "
                                     "Qwen2-VL's default)."),
                io.Int.Input("max_pixels", default=REFERENCE_MAX_PIXELS, min=28 * 28, max=REFERENCE_MAX_PIXELS, step=28 * 28,
                             tooltip="Larger images are downscaled to at most this many pixels (reference: 12845056 = "
                                     "16384*28*28, Qwen2-VL's default). Each 28x28 block costs one VLM token: lower it "
                                     "(e.g. 1003520 = 1280*28*28) to think faster with less memory."),
                io.Image.Input("images", optional=True,
                               tooltip="Images for the prompt; each image of a batch is one picture, in order. "
                                       "Join several LoadImage outputs with a Batch Images node."),
            ],
            outputs=[FEATURES.Output(display_name="features"), io.String.Output(display_name="text")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, vlm, prompt: str, seed: int, max_new_tokens: int, temperature: float, top_p: float,
                greedy: bool, stop_at_eos: bool, picture_labels: str, min_pixels: int, max_pixels: int,
                images: torch.Tensor | None = None) -> io.NodeOutput:
        sampling = SamplingOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                   greedy=greedy, stop_at_eos=stop_at_eos, seed=seed)
        request = VLMRequest(prompt, as_pil_list(images), picture_labels)
        node_id = cls.hidden.unique_id
        progress = comfy.utils.ProgressBar(max_new_tokens, node_id=node_id)

        def on_token(step: int, total: int, ids: torch.Tensor) -> None:
            progress.update_absolute(step, total)
            _show_text(vlm.model.decode(ids[0]), node_id)

        answer = think(vlm, request, sampling, min_pixels, max_pixels, on_token)
        return io.NodeOutput(answer, answer.text, ui=ui.PreviewText(answer.text))


def think(vlm: ModelPatcher, request: VLMRequest, sampling: SamplingOptions, min_pixels: int, max_pixels: int,
          on_token: TokenCallback | None = None) -> VLMOutput:
    """The Think node's work: the request prepared (and validated) on the CPU, the VLM loaded through ComfyUI's memory
    manager with the think's working memory reserved, then the answer; Cancel is checked after every token, before
    ``on_token``."""
    encoder: QwenVLEncoder = vlm.model
    inputs = encoder.prepare([request], min_pixels, max_pixels, sampling.max_new_tokens)
    memory = think_memory_required(encoder, inputs, sampling.max_new_tokens)
    encoder = load_for_use(vlm, streamable=not is_bitsandbytes(encoder.weights), memory_required=memory)
    inputs = {k: v.to(vlm.load_device) for k, v in inputs.items()}

    def checked(step: int, total: int, ids: torch.Tensor) -> None:
        mm.throw_exception_if_processing_interrupted()
        if on_token is not None:
            on_token(step, total, ids)

    return encoder.generate(inputs, sampling, checked)[0]


def _show_text(text: str, node_id: str | None) -> None:
    """Stream the answer so far onto the node (only when a server is running)."""
    from server import PromptServer

    if node_id is not None and getattr(PromptServer, "instance", None) is not None:  # None / unset without a server
        PromptServer.instance.send_progress_text(text, node_id)
