"""Fixtures for the training tests: a tiny T5 folder (real T5 tokenizer), a small real photo set, run configs.

The photo set is scikit-image's bundled photos (CC0 / public domain) with captions written here, in
their original modes (RGB, grayscale, RGBA), downscaled to keep the tests fast, plus one unreadable
file and one empty caption (both must be skipped). The same pairs also come as a WebDataset tar.
"""

from __future__ import annotations

import codecs
import copy
import io
import json
import locale
import tarfile
from pathlib import Path

import pytest
import skimage
import torch
from accelerate.state import AcceleratorState
from PIL import Image
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

from tests.support.paths import T5_TOKENIZER
from tests.support.tiny_models import make_vision
from training.config import Config, load_config

PHOTO_CAPTIONS = {
    "astronaut.png": "A portrait of an astronaut in an orange suit, in front of an American flag.",
    "chelsea.png": "A close-up photo of a tabby cat.",
    "coffee.png": "A cup of coffee on a saucer on a wooden table.",
    "rocket.jpg": "A rocket launching into a blue sky!",
    "motorcycle_left.png": "A red motorcycle parked in a garage.",
    "hubble_deep_field.jpg": "Galaxies in the deep field of space.",
    "horse.png": "A black silhouette of a horse.",  # RGBA
    "brick.png": "A gray brick wall.",  # grayscale from here on
    "grass.png": "Green grass texture seen from above.",
    "gravel.png": "Gray gravel texture.",
    "coins.png": "Old coins on a dark background.",
    "camera.png": "A man with a camera on a tripod.",
    "logo.png": "The scikit-image logo: a snake drawn on a white background.",  # RGBA
    "moon.png": "The surface of the moon (craters).",
}
PHOTO_SIDE = 96
TINY_T5 = dict(vocab_size=32128, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
               feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


@pytest.fixture
def ascii_locale():
    """An ASCII locale in this process (a bare cluster node's C locale; Windows' cp1252 alike): files opened without
    an encoding would be read as ASCII. Skipped where Python's UTF-8 mode is on (open() then ignores the locale)."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    if codecs.lookup(locale.getpreferredencoding(False)).name != "ascii":
        locale.setlocale(locale.LC_CTYPE, before)
        pytest.skip(f"Python's UTF-8 mode is on: files open as {locale.getpreferredencoding(False)} whatever the locale "
                    "(start Python with PYTHONUTF8=0)")
    yield
    locale.setlocale(locale.LC_CTYPE, before)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test may pick its own mixed precision: Accelerate keeps process-wide state otherwise."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def make_t5(folder: Path, seed: int = 0, **overrides) -> Path:
    """A tiny random Flan-T5-shaped model (vocab 32128) with the real T5 tokenizer, as a Hugging Face folder."""
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(copy.deepcopy(T5Config(**{**TINY_T5, **overrides})))
    with torch.no_grad():  # a non-trivial final norm, so the aligner-norm init is visible
        model.encoder.final_layer_norm.weight.uniform_(0.5, 1.5)
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(T5_TOKENIZER)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def t5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_t5(tmp_path_factory.mktemp("models") / "tiny-flan-t5")


@pytest.fixture(scope="session")
def vision_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vision(tmp_path_factory.mktemp("models") / "tiny-blip2-vision.safetensors")


def _photo(name: str) -> Image.Image:
    image = Image.open(Path(skimage.__file__).parent / "data" / name)
    image.thumbnail((PHOTO_SIDE, PHOTO_SIDE))
    return image


@pytest.fixture(scope="session")
def photo_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``captions.jsonl`` + ``images/``: 14 good pairs, one unreadable image, one empty caption."""
    root = tmp_path_factory.mktemp("photos")
    (root / "images").mkdir()
    rows = []
    for name, caption in PHOTO_CAPTIONS.items():
        target = f"images/{Path(name).stem}.png"
        _photo(name).save(root / target)
        rows.append({"image": target, "caption": caption})
    (root / "images" / "broken.png").write_bytes(b"not an image")
    rows.append({"image": "images/broken.png", "caption": "an unreadable file"})
    rows.append({"image": "images/chelsea.png", "caption": "  "})
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="session")
def photo_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photos in MiniGPT-4's cc_sbu layout: ``KEY.jpg`` + ``KEY.json`` (+ ``KEY.txt``), plus a corrupt sample."""
    path = tmp_path_factory.mktemp("shards") / "000000.tar"
    with tarfile.open(path, "w") as tar:
        for number, (name, caption) in enumerate(PHOTO_CAPTIONS.items()):
            key = f"{number:09d}"
            jpeg = io.BytesIO()
            _photo(name).convert("RGB").save(jpeg, format="JPEG")
            _add(tar, f"{key}.jpg", jpeg.getvalue())
            _add(tar, f"{key}.json", json.dumps({"caption": caption, "key": key}).encode())
            _add(tar, f"{key}.txt", b"not the caption: the .json's is read")
        _add(tar, "999999999.jpg", b"\xff\xd8 truncated")
        _add(tar, "999999999.txt", b"a corrupt jpeg")
    return path


def tiny_run_overrides(output: Path, *overrides: str) -> list[str]:
    """``--set`` overrides for tiny CPU runs (fp32, no warm-up, log every step) writing to ``output``."""
    base = [f"run.output_dir={json.dumps(str(output))}", 'run.mixed_precision="no"', "data.num_workers=0",
            "train.log_every=1", "train.checkpoint_every=1000", "optim.warmup_steps=0", "optim.lr=1e-3", "optim.min_lr=1e-3",
            'model.t5_dtype="fp32"']
    return base + list(overrides)


def tiny_run_config(output: Path, *overrides: str) -> Config:
    """A config for tiny CPU runs, see :func:`tiny_run_overrides`."""
    return load_config(None, tiny_run_overrides(output, *overrides))


def quoted(path: Path) -> str:
    return json.dumps(str(path))


def precompute_settings(vlm: Path, photos: Path, features: Path) -> list[str]:
    """Stage A on the photo set with the tiny Qwen2-VL: 16 entries in 4 shards of up to 5, batches of 3, 6 tokens."""
    return [f"precompute.vlm={quoted(vlm)}", f"data.captions={quoted(photos / 'captions.jsonl')}",
            f"precompute.features_dir={quoted(features)}", 'precompute.dtype="fp32"', "precompute.batch_size=3",
            "precompute.samples_per_shard=5", "precompute.max_new_tokens=6", "precompute.min_pixels=3136",
            "precompute.max_pixels=12544", "precompute.progress_every_s=0.0"]


@pytest.fixture
def run_config(tmp_path: Path):
    """``run_config(*overrides, output="run")``: :func:`tiny_run_config` under ``tmp_path``."""

    def make(*overrides: str, output: str = "run") -> Config:
        return tiny_run_config(tmp_path / output, *overrides)

    return make


@pytest.fixture(scope="session")
def stage_a_settings(tiny_vlm_folder: Path, photo_set: Path):
    """``stage_a_settings(features_dir)``: the overrides of :func:`precompute_settings` for the tiny VLM and photo set."""
    return lambda features: precompute_settings(tiny_vlm_folder, photo_set, features)


@pytest.fixture(scope="session")
def lvlm_features(tmp_path_factory: pytest.TempPathFactory, tiny_vlm_folder: Path, photo_set: Path) -> Config:
    """Stage A run once on the photo set; returns its config (features in ``precompute.features_dir``)."""
    from training.precompute import precompute

    root = tmp_path_factory.mktemp("stage_a")
    config = tiny_run_config(root / "run", *precompute_settings(tiny_vlm_folder, photo_set, root / "features"))
    precompute(config)
    AcceleratorState._reset_state(reset_partial_state=True)
    return config


@pytest.fixture(scope="session")
def photo_captions() -> dict[str, str]:
    return dict(PHOTO_CAPTIONS)
