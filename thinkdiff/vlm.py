"""ThinkDiff-LVLM encoding: let Qwen2-VL answer, keep the final-norm states of its generated tokens.

Semantics (the reference's patched vLLM, thinkdiff-reference.md section 3.2): row ``k`` of the
features is the post-final-norm last-layer state whose logits sampled generated token ``k``; row 0 is
the last prompt position and N tokens give N rows. The rows are captured by a forward hook on the
language model's final norm while ``generate()`` runs, so no per-layer hidden states are kept.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from PIL import Image
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoProcessor,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)

from .errors import ThinkDiffError
from .hf_compat import dtype_kwarg
from .images import REFERENCE_MAX_PIXELS, REFERENCE_MIN_PIXELS, fit_to_pixel_budget
from .prompts import PictureLabels, render_chat
from .safetensors_header import check_complete
from .sampling_options import PAPER_SAMPLING, SamplingOptions
from .weight_formats import (
    WeightFormat,
    bitsandbytes_config,
    bitsandbytes_unavailable,
    check_weight_format,
    is_bitsandbytes,
    keep_quantized_state_with_weights,
    store_linears_fp8,
)

QWEN2_VL_URL = "https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct"
SUPPORTED_MODEL_TYPES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}

# (step, total, generated ids so far [batch, step]) -> None; may raise to cancel generation.
TokenCallback = Callable[[int, int, torch.Tensor], None]


@dataclass
class VLMOutput:
    """One answer: ``features`` [N, hidden] (rows as described in the module docstring), its token ids and text."""

    features: torch.Tensor
    token_ids: torch.Tensor
    text: str

    @property
    def num_tokens(self) -> int:
        return int(self.features.shape[0])


@dataclass
class VLMRequest:
    """One prompt: text with optional ``<image>`` placeholders and its images in order."""

    prompt: str
    images: Sequence[Image.Image] = ()
    picture_labels: PictureLabels = "auto"


class _EveryToken(StoppingCriteria):
    """Calls ``callback`` after each generated token; never stops generation itself."""

    def __init__(self, prompt_length: int, total: int, callback: TokenCallback) -> None:
        self.prompt_length, self.total, self.callback = prompt_length, total, callback

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        generated = input_ids[:, self.prompt_length:]
        self.callback(generated.shape[1], self.total, generated)
        return input_ids.new_zeros(input_ids.shape[0], dtype=torch.bool)


def register_tensor_attributes(model: nn.Module) -> None:
    """Turn every tensor a module holds as a plain attribute into a non-persistent buffer of its own, so that every
    move of the model takes it along. (transformers 4.x keeps the rotary tables' ``original_inv_freq`` so, as an alias
    of ``inv_freq``: a move of the model left it where the model was built. transformers 5.x registers it as a buffer
    holding a copy, as here.)"""
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor):
                delattr(module, name)
                module.register_buffer(name, value.clone(), persistent=False)


def final_norm(model: nn.Module) -> nn.Module:
    """The language model's final RMSNorm (its output is what the reference captures)."""
    for path in ("model.language_model.norm", "model.norm", "language_model.model.norm"):
        module: Any = model
        with contextlib.suppress(AttributeError):
            for name in path.split("."):
                module = getattr(module, name)
            return module
    raise ThinkDiffError(f"cannot find the final norm of {type(model).__name__}; is it a Qwen2-VL model?")


@contextlib.contextmanager
def capture_last_position(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect ``output[:, -1]`` of every forward of ``module`` while the context is open."""
    rows: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        rows.append(output[:, -1].detach())

    handle = module.register_forward_hook(hook)
    try:
        yield rows
    finally:
        handle.remove()


def _read_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ThinkDiffError(
            f"{folder} is not a Hugging Face model folder (no config.json). Put the whole Qwen2-VL-Instruct folder "
            f"there, e.g. `huggingface-cli download Qwen/Qwen2-VL-7B-Instruct --local-dir {folder}` ({QWEN2_VL_URL}).")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ThinkDiffError(f"{config_file} is not valid JSON ({e}); download the model folder again.") from e


def _check_tokenizer(tokenizer: Any, config: Any, folder: Path) -> None:
    """transformers silently builds an empty tokenizer when the files are missing: refuse that."""
    image_token = getattr(config, "image_token_id", None)
    if tokenizer.convert_tokens_to_ids("<|image_pad|>") != image_token:
        raise _missing_tokenizer(folder)


def _missing_tokenizer(folder: Path) -> ThinkDiffError:
    return ThinkDiffError(f"the tokenizer in {folder} does not know Qwen2-VL's image token: tokenizer files are missing "
                          f"(tokenizer.json, tokenizer_config.json). Download the complete folder from {QWEN2_VL_URL}.")


def trim_at_eos(features: torch.Tensor, ids: torch.Tensor, eos_ids: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep rows up to and including the first end-of-sequence token, as vLLM reports a stopped answer."""
    hits = torch.isin(ids, ids.new_tensor(eos_ids)).nonzero()
    if len(hits) == 0:
        return features, ids
    end = int(hits[0]) + 1
    return features[:end], ids[:end]


class QwenVLEncoder(nn.Module):
    """A Qwen2-VL model and its processor, producing ThinkDiff features.

    It is an ``nn.Module`` so that ComfyUI's ModelPatcher can move it between devices.
    """

    def __init__(self, model: nn.Module, processor: Any, name: str = "", weights: WeightFormat = "default") -> None:
        super().__init__()
        self.model = model.train(False)  # inference behaviour (no dropout)
        self.processor = processor
        self.name = name
        self.weights = weights
        # Generation settings come only from SamplingOptions: keep the token ids of the folder's
        # generation_config and drop its sampling defaults (Qwen ships top_k=1, repetition_penalty=1.05).
        folder_config = model.generation_config
        eos = folder_config.eos_token_id
        self.eos_token_id = eos if eos is not None else model.config.get_text_config().eos_token_id  # 5.x: only there
        pad = folder_config.pad_token_id if folder_config.pad_token_id is not None else processor.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self._first_eos()
        model.generation_config = GenerationConfig(eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
                                                   bos_token_id=folder_config.bos_token_id)

    def _first_eos(self) -> int:
        return self.eos_token_id[0] if isinstance(self.eos_token_id, list) else self.eos_token_id

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: torch.dtype = torch.bfloat16, attn_implementation: str = "sdpa",
                    weights: WeightFormat = "default") -> QwenVLEncoder:
        """Load a Qwen2-VL(-Instruct) Hugging Face folder from disk (never from the hub) on the CPU.

        ``dtype`` is the working precision; ``weights`` how the weights are stored (``thinkdiff.weight_formats``).
        """
        folder, weights = Path(folder), check_weight_format(weights)
        quantization = {"quantization_config": bitsandbytes_config(weights, dtype), "device_map": "cpu"} if is_bitsandbytes(weights) else {}
        model_type = _read_config(folder).get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ThinkDiffError(f"{folder.name} is a {model_type!r} model; ThinkDiff-LVLM needs Qwen2-VL "
                                 f"({', '.join(SUPPORTED_MODEL_TYPES)}), e.g. {QWEN2_VL_URL}")
        model_class = getattr(transformers, SUPPORTED_MODEL_TYPES[model_type])
        if not (folder / "tokenizer.json").is_file() and not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
            raise _missing_tokenizer(folder)  # transformers 4.x would try a slow-tokenizer conversion and fail on protobuf
        for shard in sorted(folder.glob("*.safetensors")):  # name the damaged file, not safetensors' "not fully covered"
            check_complete(shard, f"download {shard.name} again from {QWEN2_VL_URL}")
        try:
            processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
            model = model_class.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=True,
                                                attn_implementation=attn_implementation, **dtype_kwarg(dtype), **quantization)
        except (OSError, ValueError, KeyError, SafetensorError) as e:
            raise ThinkDiffError(f"could not load the model in {folder}: {e}. The folder must hold the complete "
                                 f"download of {QWEN2_VL_URL} (config, tokenizer, preprocessor and *.safetensors files).") from e
        except RuntimeError as e:  # transformers' bitsandbytes check: no device this bitsandbytes/transformers pair supports
            if not quantization:
                raise
            raise bitsandbytes_unavailable(weights, e) from e
        _check_tokenizer(processor.tokenizer, model.config, folder)
        if weights == "fp8_e4m3fn":
            store_linears_fp8(model)
        keep_quantized_state_with_weights(model)
        register_tensor_attributes(model)
        return cls(model, processor, folder.name, weights)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "text_config", config).hidden_size)

    @property
    def param_device(self) -> torch.device:
        """Where the model computes: the device of its rotary tables, buffers that are never streamed (under ComfyUI's
        partial loading any layer's parameters may stay in CPU RAM)."""
        return next(b for m in self.model.modules() if next(m.parameters(recurse=False), None) is None
                    for b in m.buffers(recurse=False)).device

    def decode(self, token_ids: torch.Tensor, skip_special_tokens: bool = True) -> str:
        return self.processor.tokenizer.decode(token_ids.tolist(), skip_special_tokens=skip_special_tokens)

    @property
    def context_length(self) -> int:
        """Tokens the language model can attend to (prompt, image tokens and the answer together)."""
        config = self.model.config
        return int(getattr(config, "text_config", config).max_position_embeddings)

    def prepare(self, requests: Sequence[VLMRequest], min_pixels: int = REFERENCE_MIN_PIXELS,
                max_pixels: int = REFERENCE_MAX_PIXELS, max_new_tokens: int = SamplingOptions.max_new_tokens,
                ) -> dict[str, torch.Tensor]:
        """Chat-format, resize and tokenize a batch of requests (left-padded) for ``generate``.

        Runs on the CPU and refuses a prompt that, with ``max_new_tokens`` more, would not fit the model's context, so
        that such a request fails before any model is moved or run.
        """
        texts, images = [], []
        for request in requests:
            texts.append(render_chat(self.processor.tokenizer, request.prompt, len(request.images), request.picture_labels))
            images.extend(fit_to_pixel_budget(request.images, min_pixels, max_pixels))
        self.processor.tokenizer.padding_side = "left"
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        self._check_context(inputs, max_new_tokens, max_pixels)
        return {k: v.to(self.param_device) for k, v in inputs.items()}

    def _check_context(self, inputs: Any, max_new_tokens: int, max_pixels: int) -> None:
        prompt = int(inputs["input_ids"].shape[1])
        if prompt + max_new_tokens <= self.context_length:
            return
        image_tokens = int((inputs["input_ids"] == self.model.config.image_token_id).sum())
        raise ThinkDiffError(
            f"the prompt is {prompt:,} tokens ({image_tokens:,} of them image tokens) and {max_new_tokens} more are to be "
            f"generated, but {self.name or 'the model'} reads at most {self.context_length:,}. Lower max_pixels (now "
            f"{max_pixels:,}; each 28x28 block of an image is one token), use fewer or smaller images, or shorten the "
            "text. (The original ThinkDiff capped prompts at 8,192 tokens.)")

    @torch.inference_mode()
    def generate(self, inputs: dict[str, torch.Tensor], sampling: SamplingOptions = PAPER_SAMPLING,
                 on_token: TokenCallback | None = None) -> list[VLMOutput]:
        """Generate answers for prepared ``inputs`` and return each answer's features, ids and text."""
        prompt_length = inputs["input_ids"].shape[1]
        generation = sampling.generate_kwargs(self.eos_token_id, self.pad_token_id, prompt_length)
        criteria = StoppingCriteriaList([_EveryToken(prompt_length, sampling.max_new_tokens, on_token)] if on_token else [])
        device = inputs["input_ids"].device  # where generation runs (some weights may be streamed from the CPU)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), capture_last_position(final_norm(self.model)) as rows:
            torch.manual_seed(sampling.seed)
            sequences = self.model.generate(**inputs, **generation, stopping_criteria=criteria)
        generated = sequences[:, prompt_length:]
        features = torch.stack(rows[: generated.shape[1]], dim=1)
        return [self._answer(features[i], generated[i], sampling.stop_at_eos) for i in range(generated.shape[0])]

    def _answer(self, features: torch.Tensor, ids: torch.Tensor, stop_at_eos: bool) -> VLMOutput:
        if stop_at_eos:
            features, ids = trim_at_eos(features, ids, self.eos_token_id)
        return VLMOutput(features=features.cpu(), token_ids=ids.cpu(), text=self.decode(ids))

    def encode(self, requests: Sequence[VLMRequest], sampling: SamplingOptions = PAPER_SAMPLING,
               on_token: TokenCallback | None = None, min_pixels: int = REFERENCE_MIN_PIXELS,
               max_pixels: int = REFERENCE_MAX_PIXELS) -> list[VLMOutput]:
        """Prepare and generate in one call."""
        return self.generate(self.prepare(requests, min_pixels, max_pixels, sampling.max_new_tokens), sampling, on_token)
