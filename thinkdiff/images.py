"""Turning image tensors into what Qwen2-VL's processor expects.

Images arrive as float tensors ``[B, H, W, C]`` in 0..1 (ComfyUI's IMAGE layout) or as a list of
such tensors / PIL images. Each batch entry is one image, in order. Grayscale and RGBA are converted
to RGB; sizes are snapped with Qwen2-VL's own ``smart_resize`` to the pixel budget the reference really ran with:
the Qwen2-VL processor defaults, 56*56 .. 16384*28*28 pixels (thinkdiff-reference.md 3.3; the 224*224 .. 1280*28*28
written in its ``generate()`` never reached vLLM).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

try:  # transformers 5.x: the PIL backend's module; its torchvision one imports torchvision at import time
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
except ImportError:  # transformers 4.5x
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from .errors import ThinkDiffError

QWEN_PATCH_FACTOR = 28  # patch 14 x spatial merge 2
REFERENCE_MIN_PIXELS = 56 * 56  # 3,136
REFERENCE_MAX_PIXELS = 16384 * 28 * 28  # 12,845,056
MAX_ASPECT_RATIO = 200


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Split an image batch (``[B, H, W, C]`` or ``[H, W, C]``, values 0..1) into RGB PIL images."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
        raise ThinkDiffError(f"expected images shaped [batch, height, width, channels], got {tuple(images.shape)}")
    if images.shape[-1] in (1, 2):  # grayscale, grayscale + alpha
        images = images[..., :1].expand(*images.shape[:-1], 3)
    images = images[..., :3]  # RGBA -> RGB (alpha dropped, as LoadImage does)
    array = (images.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return [Image.fromarray(a) for a in array]


def as_pil_list(images: torch.Tensor | Sequence[torch.Tensor | Image.Image] | None) -> list[Image.Image]:
    """Accept a batch tensor, a list of tensors/PIL images, or None; return RGB PIL images in order."""
    if images is None:
        return []
    if isinstance(images, torch.Tensor):
        return tensor_to_pil(images)
    out: list[Image.Image] = []
    for item in images:
        out.extend(tensor_to_pil(item) if isinstance(item, torch.Tensor) else [item.convert("RGB")])
    return out


def qwen_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) that Qwen2-VL's processor resizes to (transformers' ``smart_resize``). A side shorter than one
    28-px patch, which transformers before 4.5x refuses, is first scaled up to one patch, so every version agrees."""
    short = min(width, height)
    if short < QWEN_PATCH_FACTOR:
        width, height = (max(QWEN_PATCH_FACTOR, round(side * QWEN_PATCH_FACTOR / short)) for side in (width, height))
    new_h, new_w = smart_resize(height, width, factor=QWEN_PATCH_FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)
    return new_w, new_h


def fit_to_pixel_budget(images: Iterable[Image.Image], min_pixels: int = REFERENCE_MIN_PIXELS,
                        max_pixels: int = REFERENCE_MAX_PIXELS) -> list[Image.Image]:
    """Resize (bicubic) each image to the size Qwen2-VL's processor would pick for this pixel budget."""
    if not 0 < min_pixels <= max_pixels:
        raise ThinkDiffError(f"need 0 < min_pixels <= max_pixels, got {min_pixels} and {max_pixels}")
    out = []
    for index, image in enumerate(images, start=1):
        width, height = image.size
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise ThinkDiffError(
                f"image {index} is {width}x{height} px: Qwen2-VL accepts aspect ratios up to {MAX_ASPECT_RATIO}:1. Crop it first.")
        new_w, new_h = qwen_size(width, height, min_pixels, max_pixels)
        out.append(image if (new_w, new_h) == (width, height) else image.resize((new_w, new_h), Image.BICUBIC))
    return out
