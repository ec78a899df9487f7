"""The diffusers backend on tiny random models (Qwen2-VL, aligner, Flux): a batch equals the paper's path computed
independently (reference prompt text, Picture labels, aligner, pooled CLIP-L(""), per-sample noise), and generate
writes it resumably."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image

from evaluation.cobsat.diffusers_backend import DiffusersBackend
from evaluation.cobsat.generate import generate
from evaluation.cobsat.records import image_file, record_file
from tests.support.tiny_models import make_aligner
from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import load_aligner_weights
from thinkdiff.errors import ThinkDiffError
from thinkdiff.vlm import QwenVLEncoder, SamplingOptions, VLMRequest

INSTRUCTION = ("I give you several words and pictures. First, please analyse what the next picture is. Then give me a detailed "
               "diffusion prompt to describe the next picture. Please only provide me the detailed prompt and start the "
               "answer with 'Create an image'.\n\n")


@pytest.fixture
def diffusers_config(eval_config, tiny_vlm_folder: Path, tiny_aligner: Path, tiny_flux: Path):
    def make(*overrides: str):
        return eval_config('generate.backend="diffusers"', f"diffusers.vlm={json.dumps(str(tiny_vlm_folder))}",
                           f"diffusers.aligner={json.dumps(str(tiny_aligner))}", f"diffusers.flux={json.dumps(str(tiny_flux))}",
                           'diffusers.vlm_dtype="fp32"', 'diffusers.flux_dtype="fp32"', 'diffusers.device="cpu"',
                           "generate.max_new_tokens=6", "generate.width=64", "generate.height=64", "generate.steps=2",
                           "generate.min_pixels=3136", "generate.max_pixels=12544", "generate.batch_size=2", "run.tasks=[1]",
                           "run.shots=[2, 4]", "run.samples_per_task=2", *overrides)
    return make


def reference_images(config, encoder: QwenVLEncoder, tiny_aligner: Path, tiny_flux: Path, samples, seeds):
    """The paper's LVLM path written out: reference prompt, Qwen2-VL features, aligner, FluxPipeline (stock loading)."""
    requests = []
    for sample in samples:
        words = [text.removesuffix(": ") for text in sample.text_inputs]
        prompt = INSTRUCTION + "".join(f"Word {k}: {w}, <image>\n\n" for k, w in enumerate(words[:-1], 1)) + \
            f"Word {len(words)}: {words[-1]}, "
        requests.append(VLMRequest(prompt, [Image.open(config.dataset_root / p).convert("RGB") for p in sample.image_inputs], "on"))
    answers = encoder.encode(requests, SamplingOptions(max_new_tokens=6, seed=seeds[0]), min_pixels=3136, max_pixels=12544)
    aligner = Aligner.from_state_dict(load_aligner_weights(tiny_aligner).state, dtype=torch.float32)
    pipe = FluxPipeline.from_pretrained(str(tiny_flux), text_encoder_2=None, tokenizer_2=None)
    with torch.inference_mode():
        embeds = aligner(torch.stack([a.features for a in answers]).float())
        pooled = pipe._get_clip_prompt_embeds(prompt="", device="cpu")
        images = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled.expand(len(samples), -1), guidance_scale=3.5,
                      num_inference_steps=2, height=64, width=64,
                      generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    return [a.text for a in answers], images


def test_a_batch_is_the_papers_path(diffusers_config, encoder, tiny_aligner: Path, tiny_flux: Path):
    config = diffusers_config()
    samples = [s for s in config.samples() if s.shot == 4]
    seeds = [42 + s.index for s in samples]
    results = DiffusersBackend(config, "cpu").generate(samples, seeds)
    texts, images = reference_images(config, encoder, tiny_aligner, tiny_flux, samples, seeds)
    assert [r.text for r in results] == texts and all(r.tokens == 6 for r in results)
    for result, image in zip(results, images, strict=True):
        assert result.image.size == (64, 64)
        np.testing.assert_array_equal(np.asarray(result.image), np.asarray(image))
    assert not np.array_equal(np.asarray(results[0].image), np.asarray(results[1].image))  # seeds differ per sample


def test_generate_writes_and_resumes(diffusers_config):
    config = diffusers_config()
    images = generate(config)
    samples = config.samples()
    assert len(samples) == 4
    for sample in samples:
        record = json.loads(record_file(images, sample).read_text())
        assert record["vlm_tokens"] == 6 and record["seed"] == 42 + sample.index and record["backend"] == "diffusers"
        assert 0 < record["vlm_seconds"] < record["seconds"]
        assert (image_file(images, sample).with_suffix(".txt")).read_text() == record["vlm_text"]
        assert Image.open(image_file(images, sample)).size == (64, 64)
    manifest = json.loads((images / "manifest.json").read_text())
    assert manifest["batch_size"] == 2 and manifest["vlm"] == "tiny-random-Qwen2-VL" and manifest["steps"] == 2
    stamps = [record_file(images, s).stat().st_mtime_ns for s in samples]
    generate(config)  # nothing left to do: no model is even loaded
    assert [record_file(images, s).stat().st_mtime_ns for s in samples] == stamps


def test_mismatched_models_are_explained(diffusers_config, tmp_path: Path):
    wrong = make_aligner(tmp_path / "wide.safetensors", in_dim=48)
    with pytest.raises(ThinkDiffError, match="reads 48-wide features but tiny-random-Qwen2-VL gives 64"):
        generate(diffusers_config(f"diffusers.aligner={json.dumps(str(wrong))}"))
    with pytest.raises(ThinkDiffError, match="not a diffusers Flux folder"):
        generate(diffusers_config(f"diffusers.flux={json.dumps(str(tmp_path))}"))
    with pytest.raises(ThinkDiffError, match=r"set \[diffusers\] vlm"):
        generate(diffusers_config('diffusers.vlm=""'))
