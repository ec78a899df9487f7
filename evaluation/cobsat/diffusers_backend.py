"""The paper's path, headless: Qwen2-VL answers a batch of samples, the aligner maps the generated-token features to
Flux's T5 space, and diffusers' FluxPipeline draws them (``prompt_embeds``; pooled = CLIP-L of ``""``; no T5 loaded).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import diffusers
import torch
from diffusers import FluxPipeline
from packaging.version import Version
from PIL import Image

from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import load_aligner_weights
from thinkdiff.dtypes import DTYPES
from thinkdiff.errors import ThinkDiffError
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder, VLMRequest

from .config import EvalConfig
from .prompt import thinkdiff_prompt
from .records import Generated
from .samples import Sample

FLUX_URL = "https://huggingface.co/black-forest-labs/FLUX.1-dev"
# diffusers 0.42 renamed from_pretrained's torch_dtype to dtype (the old name warns).
DTYPE_KWARG = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"


@torch.inference_mode()
def clip_pooled(pipe: FluxPipeline, text: str = "") -> torch.Tensor:
    """CLIP-L's pooled output of ``text`` [1, D], as FluxPipeline computes it (padded to 77 tokens)."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device), output_hidden_states=False).pooler_output


def load_flux(folder: Path, dtype: torch.dtype) -> FluxPipeline:
    """FluxPipeline from a local diffusers folder, on the CPU, without the T5 encoder (ThinkDiff replaces it)."""
    if not (folder / "model_index.json").is_file():
        raise ThinkDiffError(f"{folder} is not a diffusers Flux folder (no model_index.json). Download it ({FLUX_URL}) with "
                             f"`huggingface-cli download black-forest-labs/FLUX.1-dev --local-dir {folder} --exclude "
                             "'text_encoder_2/*' flux1-dev.safetensors ae.safetensors` (the T5 and ComfyUI's single files are "
                             "not needed).")
    try:
        return FluxPipeline.from_pretrained(str(folder), text_encoder_2=None, tokenizer_2=None, local_files_only=True,
                                            **{DTYPE_KWARG: dtype})
    except (OSError, ValueError, KeyError) as e:
        raise ThinkDiffError(f"could not load Flux from {folder}: {e}. The folder needs transformer/, vae/, text_encoder/, "
                             f"tokenizer/, scheduler/ and model_index.json from {FLUX_URL}.") from e


def _folder(config: EvalConfig, value: str, setting: str) -> Path:
    if not value:
        raise ThinkDiffError(f"set [diffusers] {setting} (see docs/evaluation.md for the downloads)")
    return config.path(value)


class DiffusersBackend:
    def __init__(self, config: EvalConfig, device: str) -> None:
        models, self.settings = config.diffusers, config.generate
        self.device, self.flux_dtype = torch.device(device), DTYPES[models.flux_dtype]
        self.dataset_root = config.dataset_root
        self.encoder = QwenVLEncoder.from_folder(_folder(config, models.vlm, "vlm"), dtype=DTYPES[models.vlm_dtype]).to(self.device)
        weights = load_aligner_weights(_folder(config, models.aligner, "aligner"))
        if weights.in_dim != self.encoder.hidden_size:
            raise ThinkDiffError(f"the aligner reads {weights.in_dim}-wide features but {self.encoder.name} gives "
                                 f"{self.encoder.hidden_size}: pick the ThinkDiff-LVLM aligner of this VLM")
        self.aligner = Aligner.from_state_dict(weights.state, dtype=torch.float32).to(self.device).train(False)
        self.pipe = load_flux(_folder(config, models.flux, "flux"), self.flux_dtype)
        width = self.pipe.transformer.config.joint_attention_dim
        if width != self.aligner.out_dim:
            raise ThinkDiffError(f"the aligner writes {self.aligner.out_dim}-wide tokens but this Flux reads {width}")
        self.pooled = clip_pooled(self.pipe).to(self.device)  # in flux_dtype: the pipeline's CLIP-L is loaded in it
        self.pipe.text_encoder = self.pipe.tokenizer = None  # only the pooled vector of "" was needed
        if models.cpu_offload:
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def _images(self, sample: Sample) -> list[Image.Image]:
        images = []
        for path in sample.image_inputs:
            with Image.open(self.dataset_root / path) as image:
                images.append(image.convert("RGB"))
        return images

    @torch.inference_mode()
    def generate(self, samples: Sequence[Sample], seeds: Sequence[int]) -> list[Generated]:
        s = self.settings
        requests = [VLMRequest(thinkdiff_prompt(sample, s.instruction), self._images(sample), picture_labels="on")
                    for sample in samples]
        sampling = SamplingOptions(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=seeds[0])
        started = time.perf_counter()
        answers = self.encoder.encode(requests, sampling, min_pixels=s.min_pixels, max_pixels=s.max_pixels)
        vlm_seconds = (time.perf_counter() - started) / len(samples)
        features = torch.stack([a.features for a in answers]).to(self.device, torch.float32)
        embeds = self.aligner(features).to(self.flux_dtype)
        images = self.pipe(prompt_embeds=embeds, pooled_prompt_embeds=self.pooled.expand(len(samples), -1),
                           guidance_scale=s.guidance, num_inference_steps=s.steps, height=s.height, width=s.width,
                           generator=[torch.Generator().manual_seed(seed) for seed in seeds]).images
        return [Generated(image, a.text, a.num_tokens, vlm_seconds) for image, a in zip(images, answers, strict=True)]
