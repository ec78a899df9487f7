"""The model judges: LLaVA-1.5 (the paper's table), Qwen2-VL (an alternative), and the CLIP ViT-B/32 metric.

LLaVA is read in the ``llava-hf`` format (``llava-hf/llava-1.5-13b-hf``) and asked in the ``llava_v1`` conversation
CoBSAT's ``run_llava.py`` builds: ``"{system} USER: <image>\\n{question} ASSISTANT:"``, greedy (temperature 0), up to
512 new tokens. LLaVA-1.5 pads images to a square before its CLIP preprocessing, the llava-hf processor centre-crops:
the same for the square images ``generate`` writes. Batches are left-padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoProcessor, CLIPModel, CLIPProcessor, GenerationConfig, LlavaForConditionalGeneration

from thinkdiff.dtypes import DTYPES
from thinkdiff.errors import ThinkDiffError
from thinkdiff.hf_compat import dtype_kwarg
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder, VLMRequest

from .protocol import TASKS, true_label
from .samples import Sample

LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.")
LLAVA_URL = "https://huggingface.co/llava-hf/llava-1.5-13b-hf"
CLIP_URL = "https://huggingface.co/openai/clip-vit-base-patch32"


def llava_prompt(question: str) -> str:
    return f"{LLAVA_SYSTEM} USER: <image>\n{question} ASSISTANT:"


def resolve_device(device: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _model_folder(folder: Path, what: str, url: str) -> Path:
    if not (folder / "config.json").is_file():
        raise ThinkDiffError(f"{folder} is not a Hugging Face model folder (no config.json): download {what} there, e.g. "
                             f"`huggingface-cli download {url.removeprefix('https://huggingface.co/')} --local-dir {folder}`")
    return folder


class LlavaJudge:
    """LLaVA-1.5 in the llava-hf format, greedy."""

    def __init__(self, folder: Path, dtype: torch.dtype, device: torch.device, max_new_tokens: int = 512) -> None:
        _model_folder(folder, "LLaVA-1.5-13B (llava-hf format)", LLAVA_URL)
        self.name, self.device = folder.name, device
        try:
            self.processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
            self.model = LlavaForConditionalGeneration.from_pretrained(str(folder), local_files_only=True, **dtype_kwarg(dtype))
        except (OSError, ValueError, KeyError) as e:
            raise ThinkDiffError(f"could not load LLaVA from {folder}: {e}. It must be the complete llava-hf download "
                                 f"({LLAVA_URL}).") from e
        self.model.to(device).train(False)
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.generation = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                           eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)

    @torch.inference_mode()
    def answer(self, questions: Sequence[tuple[Path, str]]) -> list[str]:
        if not questions:
            return []
        inputs = self.processor(images=[_open(path) for path, _ in questions], text=[llava_prompt(q) for _, q in questions],
                                padding=True, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sequences = self.model.generate(**inputs, generation_config=self.generation)
        answers = sequences[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.processor.tokenizer.batch_decode(answers, skip_special_tokens=True)]


class QwenJudge:
    """Qwen2-VL-Instruct answering image-first questions, greedy, stopping at end-of-text."""

    def __init__(self, folder: Path, dtype: torch.dtype, device: torch.device, max_new_tokens: int = 512) -> None:
        self.encoder = QwenVLEncoder.from_folder(folder, dtype=dtype).to(device)
        self.name = folder.name
        self.sampling = SamplingOptions(max_new_tokens=max_new_tokens, greedy=True, stop_at_eos=True)

    def answer(self, questions: Sequence[tuple[Path, str]]) -> list[str]:
        if not questions:
            return []
        outputs = self.encoder.encode([VLMRequest(q, [_open(path)]) for path, q in questions], self.sampling)
        return [output.text.strip() for output in outputs]


def load_model_judge(model: str, folder: Path, dtype: str, device: str, max_new_tokens: int) -> LlavaJudge | QwenJudge:
    judge_class = LlavaJudge if model == "llava" else QwenJudge
    return judge_class(folder, DTYPES[dtype], resolve_device(device), max_new_tokens)


class ClipMetric:
    """CoBSAT's CLIP check: similarities (x logit scale, floored at 0) of the image to the ground truth's texts and
    to every option; the argmax over the objects and over the details must both be the ground truth."""

    def __init__(self, folder: Path, device: str = "auto") -> None:
        _model_folder(folder, "CLIP ViT-B/32", CLIP_URL)
        self.device = resolve_device(device)
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).to(self.device).train(False)
        self.processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)

    @torch.inference_mode()
    def score(self, path: Path, sample: Sample) -> dict[str, Any]:
        task = TASKS[sample.task]
        detail, obj = sample.gt["detail"], sample.gt["obj"]
        objects, details = task.vocabulary("obj"), task.vocabulary("detail")
        texts = [detail, obj, f"{detail} {obj}", *objects, *details]
        inputs = self.processor(text=texts, images=_open(path), return_tensors="pt", padding=True, truncation=True,
                                max_length=77).to(self.device)
        out = self.model(**inputs)
        similarity = ((out.text_embeds @ out.image_embeds.T)[:, 0] * self.model.logit_scale.exp()).clamp(min=0).float().cpu()
        object_pick = int(similarity[3:3 + len(objects)].argmax()) + 1
        detail_pick = int(similarity[3 + len(objects):].argmax()) + 1
        checks = {"clip_check_detail": detail_pick == true_label(task, "detail", detail),
                  "clip_check_obj": object_pick == true_label(task, "obj", obj)}
        return {"clip_similarity_detail": float(similarity[0]), "clip_similarity_obj": float(similarity[1]),
                "clip_similarity_overall": float(similarity[2]), **checks,
                "clip_correct": checks["clip_check_detail"] and checks["clip_check_obj"]}
