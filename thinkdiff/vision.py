"""ThinkDiff-CLIP image tokens: a vision tower's post-layernorm output, CLS + a bilinearly downsampled patch grid.

The reference (thinkdiff-reference.md section 4.1) uses BLIP-2's EVA ViT-g/14 (transformers ``Blip2VisionModel``):
224 px bicubic resize, CLIP mean/std, last hidden state after ``post_layernorm`` = CLS + 16x16 patches; the patches
are resized to 8x8 with ``F.interpolate(mode="bilinear", align_corners=False)``, giving 1 + 64 = 65 tokens.
Our vision file is one ``.safetensors`` holding the tower's weights, its config (JSON) and the token grid in
its metadata, so the encoder class, token count and downsampling come from the file, not from constants.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from .errors import ThinkDiffError
from .model_setup import EXTRACT_COMMAND
from .safetensors_files import read_safetensors

VISION_FORMAT = "thinkdiff.vision"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
REFERENCE_GRID = 8
BLIP2_URL = "https://huggingface.co/Salesforce/blip2-flan-t5-xxl"
# Vision towers whose ``last_hidden_state`` is already post-layernorm CLS + patch grid.
ENCODER_CLASSES = {"Blip2VisionModel": "Blip2VisionConfig"}


def image_tokens(hidden: torch.Tensor, grid: int) -> torch.Tensor:
    """CLS + the square patch grid of ``hidden`` [B, 1 + n*n, D] resized to ``grid`` x ``grid``: [B, 1 + grid*grid, D]."""
    batch, length, width = hidden.shape
    side = int(round((length - 1) ** 0.5))
    if side * side != length - 1:
        raise ThinkDiffError(f"expected CLS + a square patch grid, got {length} tokens")
    patches = hidden[:, 1:].transpose(1, 2).reshape(batch, width, side, side)
    if side != grid:
        patches = F.interpolate(patches, size=(grid, grid), mode="bilinear", align_corners=False)
    return torch.cat([hidden[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)


def preprocess_images(images: Sequence[Image.Image], size: int, mean: Sequence[float] = CLIP_MEAN,
                      std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Resize to ``size`` x ``size`` (bicubic, no crop), scale to 0..1 and normalise: [B, 3, size, size] float32 on the CPU."""
    if not images:
        raise ThinkDiffError("no image to encode: connect at least one image.")
    arrays = [np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0 for image in images]
    normalised = (np.stack(arrays) - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(normalised).permute(0, 3, 1, 2).contiguous()


class VisionTokenEncoder(nn.Module):
    """A vision tower producing ThinkDiff-CLIP image tokens (an ``nn.Module`` for ComfyUI's ModelPatcher)."""

    def __init__(self, model: nn.Module, grid: int = REFERENCE_GRID, mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD) -> None:
        super().__init__()
        self.model = model.train(False)  # inference behaviour (no dropout)
        self.grid = grid
        self.image_size = int(model.config.image_size)
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def from_config(cls, config: Any, grid: int = REFERENCE_GRID) -> VisionTokenEncoder:
        """Random weights, e.g. for tests and benchmarks."""
        return cls(_encoder_class(type(config).__name__.removesuffix("Config") + "Model")(config), grid)

    @classmethod
    def from_file(cls, path: str | Path, dtype: torch.dtype | None = None) -> VisionTokenEncoder:
        """Load a vision file written by :func:`save_vision_file` (e.g. by ``python -m thinkdiff extract-vision``)."""
        path = Path(path)
        metadata, state = _read_vision_file(path)
        model_class = _encoder_class(metadata["encoder_class"])
        config_class = getattr(transformers, ENCODER_CLASSES[metadata["encoder_class"]])
        with torch.device("meta"):
            model = model_class(config_class(**json.loads(metadata["config"])))
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise ThinkDiffError(f"{path.name} does not match its own config ({e}); extract it again.") from e
        return cls(model.to(dtype) if dtype else model, int(metadata["token_grid"]))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_tokens(self) -> int:
        return 1 + self.grid * self.grid

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return preprocess_images(images, self.image_size, self.mean, self.std)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        parameter = next(self.model.parameters())
        hidden = self.model(pixel_values=pixel_values.to(parameter.device, parameter.dtype)).last_hidden_state
        return image_tokens(hidden, self.grid)

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Image tokens for each image: [len(images), 1 + grid*grid, hidden]."""
        return self(self.preprocess(images))


def _encoder_class(name: str) -> type[nn.Module]:
    if name not in ENCODER_CLASSES:
        raise ThinkDiffError(f"unsupported vision encoder {name!r}; supported: {', '.join(ENCODER_CLASSES)}")
    return getattr(transformers, name)


def _read_vision_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise ThinkDiffError(f"vision encoder file not found: {path}")
    metadata, state = read_safetensors(path, "extract or download it again")
    if metadata.get("format") != VISION_FORMAT:
        raise ThinkDiffError(f"{path.name} is not a ThinkDiff vision-encoder file. Make one from a local {BLIP2_URL} folder with "
                             f"`{EXTRACT_COMMAND} BLIP2_FOLDER ComfyUI/models/thinkdiff/blip2_vision.safetensors`.")
    return metadata, state


def save_vision_file(model: nn.Module, path: str | Path, grid: int = REFERENCE_GRID, dtype: torch.dtype | None = None,
                     **metadata: str) -> Path:
    """Write a vision tower with its config and token grid in the metadata."""
    path = Path(path)
    name = type(model).__name__
    _encoder_class(name)
    state = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    meta = {**metadata, "format": VISION_FORMAT, "encoder_class": name, "config": model.config.to_json_string(use_diff=False),
            "token_grid": str(grid), "hidden_size": str(model.config.hidden_size)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path
