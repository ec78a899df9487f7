"""The diffusers backend's parts on the tiny models: Flux's loading (dtype, no T5, the errors), the pooled CLIP-L vector,
what the backend holds once set up. test_generate_diffusers.py checks a whole batch against the paper's path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image

from evaluation.cobsat.diffusers_backend import FLUX_URL, DiffusersBackend, _folder, clip_pooled, load_flux
from evaluation.cobsat.samples import Sample
from tests.evaluation.tiny_eval_models import make_flux
from thinkdiff.aligner_files import load_aligner_weights
from thinkdiff.errors import ThinkDiffError


@pytest.fixture(scope="module")
def flux_pipe(tiny_flux: Path) -> FluxPipeline:
    return FluxPipeline.from_pretrained(str(tiny_flux), text_encoder_2=None, tokenizer_2=None)


def test_the_pooled_vector_is_fluxs(flux_pipe: FluxPipeline):
    """FluxPipeline's own pooled CLIP-L output of a prompt (77 tokens, padded)."""
    for text in ("", "a red car " * 40):
        reference = flux_pipe._get_clip_prompt_embeds(prompt=text, device="cpu")
        assert torch.equal(clip_pooled(flux_pipe, text), reference) and reference.shape == (1, 32)
    assert torch.equal(clip_pooled(flux_pipe), flux_pipe._get_clip_prompt_embeds(prompt="", device="cpu"))
    assert not torch.equal(clip_pooled(flux_pipe, "a red car"), clip_pooled(flux_pipe))
    assert clip_pooled(flux_pipe).is_inference()


def test_flux_loads_in_the_dtype_asked_without_t5(tiny_flux: Path, flux_pipe: FluxPipeline):
    pipe = load_flux(tiny_flux, torch.bfloat16)
    assert (pipe.transformer.dtype, pipe.vae.dtype, pipe.text_encoder.dtype) == (torch.bfloat16,) * 3
    assert pipe.text_encoder_2 is None and pipe.tokenizer_2 is None
    assert torch.equal(pipe.transformer.x_embedder.weight, flux_pipe.transformer.x_embedder.weight.to(torch.bfloat16))
    assert load_flux(tiny_flux, torch.float32).transformer.dtype == torch.float32


def test_a_folder_that_is_not_flux_is_explained(tiny_flux: Path, tmp_path: Path):
    with pytest.raises(ThinkDiffError) as error:
        load_flux(tmp_path, torch.float32)
    assert str(error.value) == (
        f"{tmp_path} is not a diffusers Flux folder (no model_index.json). Download it ({FLUX_URL}) with `huggingface-cli "
        f"download black-forest-labs/FLUX.1-dev --local-dir {tmp_path} --exclude 'text_encoder_2/*' flux1-dev.safetensors "
        "ae.safetensors` (the T5 and ComfyUI's single files are not needed).")
    assert FLUX_URL == "https://huggingface.co/black-forest-labs/FLUX.1-dev"
    shutil.copy(tiny_flux / "model_index.json", tmp_path / "model_index.json")  # and nothing else
    with pytest.raises(ThinkDiffError) as error:
        load_flux(tmp_path, torch.float32)
    message = str(error.value)
    assert message.startswith(f"could not load Flux from {tmp_path}: ") and message.endswith(
        f". The folder needs transformer/, vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json from {FLUX_URL}.")
    assert isinstance(error.value.__cause__, (OSError, ValueError, KeyError))


def test_model_folders_are_the_configs(eval_config, tmp_path: Path):
    config = eval_config()
    assert _folder(config, "models/flux", "flux") == Path.cwd().resolve() / "models" / "flux"
    for setting in ("vlm", "aligner", "flux"):
        with pytest.raises(ThinkDiffError) as error:
            _folder(config, "", setting)
        assert str(error.value) == f"set [diffusers] {setting} (see docs/evaluation.md for the downloads)"


@pytest.fixture
def models_config(eval_config, tiny_vlm_folder: Path, tiny_aligner: Path, tiny_flux: Path):
    def make(*overrides: str):
        return eval_config(f"diffusers.vlm={json.dumps(str(tiny_vlm_folder))}", f"diffusers.aligner={json.dumps(str(tiny_aligner))}",
                           f"diffusers.flux={json.dumps(str(tiny_flux))}", *overrides)
    return make


def test_the_backend_holds_the_models_in_their_dtypes(models_config, flux_pipe: FluxPipeline, tiny_aligner: Path,
                                                     tmp_path: Path):
    backend = DiffusersBackend(models_config('diffusers.vlm_dtype="fp32"', 'diffusers.flux_dtype="fp32"'), "cpu")
    assert backend.device == torch.device("cpu") and backend.flux_dtype == torch.float32
    assert backend.encoder.model.dtype == torch.float32 and backend.pipe.transformer.dtype == torch.float32
    assert backend.aligner.training is False and next(backend.aligner.parameters()).dtype == torch.float32
    assert torch.equal(backend.pooled, flux_pipe._get_clip_prompt_embeds(prompt="", device="cpu"))
    assert backend.pipe.text_encoder is None and backend.pipe.tokenizer is None  # only the pooled vector was needed
    assert backend.pipe._progress_bar_config == {"disable": True}
    assert backend.dataset_root == models_config().dataset_root
    state = load_aligner_weights(tiny_aligner).state
    torch.save({k: v.bfloat16() for k, v in state.items()}, tmp_path / "release_bf16.pth")  # a release file's tensors
    backend = DiffusersBackend(models_config('diffusers.vlm_dtype="bf16"', 'diffusers.flux_dtype="bf16"',
                                             f"diffusers.aligner={json.dumps(str(tmp_path / 'release_bf16.pth'))}"), "cpu")
    assert (backend.encoder.model.dtype, backend.pipe.transformer.dtype, backend.pooled.dtype, backend.flux_dtype) == \
        (torch.bfloat16,) * 4
    assert {p.dtype for p in backend.aligner.parameters()} == {torch.float32}
    assert all(torch.equal(backend.aligner.state_dict()[k], v.bfloat16().float()) for k, v in state.items())


def test_each_missing_model_folder_is_named(models_config):
    for setting in ("vlm", "aligner", "flux"):
        with pytest.raises(ThinkDiffError) as error:
            DiffusersBackend(models_config(f'diffusers.{setting}=""', 'diffusers.vlm_dtype="fp32"'), "cpu")
        assert str(error.value) == f"set [diffusers] {setting} (see docs/evaluation.md for the downloads)"


def test_a_flux_of_another_width_is_explained(models_config, tmp_path: Path):
    wide = make_flux(tmp_path / "wide-flux", joint_width=48)
    with pytest.raises(ThinkDiffError) as error:
        DiffusersBackend(models_config(f"diffusers.flux={json.dumps(str(wide))}"), "cpu")
    assert str(error.value) == "the aligner writes 32-wide tokens but this Flux reads 48"


def test_the_demo_images_are_read_in_rgb(tmp_path: Path):
    """Whatever the files' modes (greyscale JPEG, palette PNG, RGBA PNG), the VLM gets RGB pictures in the sample's order."""
    (tmp_path / "pictures").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 24), dtype=np.uint8), "L").save(tmp_path / "pictures" / "grey.jpg")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("P").save(tmp_path / "pictures" / "palette.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "RGBA").save(tmp_path / "pictures" / "alpha.png")
    paths = ("pictures/palette.png", "pictures/grey.jpg", "pictures/alpha.png")
    backend = object.__new__(DiffusersBackend)  # only the dataset folder: no model needed to read pictures
    backend.dataset_root = tmp_path
    images = backend._images(Sample(1, 3, 0, ("a: ", "b: ", "c: ", "d: "), paths, {"detail": "d", "obj": "x"}, "0_x_a_b_c_d"))
    assert [image.mode for image in images] == ["RGB"] * 3
    for image, path in zip(images, paths, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(tmp_path / path).convert("RGB")))
