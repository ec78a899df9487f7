"""Odd images: RGBA, grayscale, tiny, huge, batches, extreme aspect ratios."""

import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from thinkdiff.errors import ThinkDiffError
from thinkdiff.images import REFERENCE_MAX_PIXELS, REFERENCE_MIN_PIXELS, as_pil_list, fit_to_pixel_budget, tensor_to_pil


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channels_become_rgb(channels):
    images = as_pil_list(torch.rand(2, 20, 30, channels))
    assert [(i.mode, i.size) for i in images] == [("RGB", (30, 20))] * 2


def test_rgba_drops_alpha():
    pixel = torch.tensor([0.2, 0.4, 0.6, 0.0]).expand(1, 4, 4, 4)
    assert as_pil_list(pixel)[0].getpixel((0, 0)) == (51, 102, 153)


def test_single_image_and_lists():
    assert len(as_pil_list(torch.rand(8, 8, 3))) == 1
    assert len(as_pil_list([torch.rand(2, 8, 8, 3), Image.new("L", (5, 5))])) == 3
    assert as_pil_list(None) == []


def test_bad_layout():
    with pytest.raises(ThinkDiffError, match="batch, height, width, channels"):
        as_pil_list(torch.rand(3, 8, 8))


@pytest.mark.parametrize("size", [(1, 1), (5, 9), (27, 27)])
def test_tiny_images_are_upscaled(size):
    (image,) = fit_to_pixel_budget([Image.new("RGB", size)])
    w, h = image.size
    assert w % 28 == 0 and h % 28 == 0 and w * h >= REFERENCE_MIN_PIXELS


def test_huge_images_are_downscaled():
    (image,) = fit_to_pixel_budget([Image.new("RGB", (6000, 4000))])
    w, h = image.size
    assert w % 28 == 0 and h % 28 == 0 and w * h <= REFERENCE_MAX_PIXELS
    assert abs(w / h - 1.5) < 0.05


def test_conforming_images_are_untouched():
    image = Image.new("RGB", (280, 224))
    assert fit_to_pixel_budget([image])[0] is image


def test_extreme_aspect_ratio():
    with pytest.raises(ThinkDiffError, match="image 2 is 3000x10"):
        fit_to_pixel_budget([Image.new("RGB", (50, 50)), Image.new("RGB", (3000, 10))])


@pytest.mark.parametrize("width", [5600, 5601])
def test_the_aspect_ratio_limit_is_qwen2_vls(width):
    """200:1 passes, as in the processor's smart_resize; one pixel more is refused by both."""
    image = Image.new("RGB", (width, 28))
    try:
        smart_resize(28, width, factor=28, min_pixels=REFERENCE_MIN_PIXELS, max_pixels=REFERENCE_MAX_PIXELS)
    except ValueError:
        with pytest.raises(ThinkDiffError, match=f"image 1 is {width}x28 px"):
            fit_to_pixel_budget([image])
    else:
        assert width == 5600 and fit_to_pixel_budget([image])[0].size[0] > 0


@pytest.mark.parametrize(("min_pixels", "max_pixels"), [(1000, 10), (0, 10), (-5, 10)])
def test_bad_budget(min_pixels, max_pixels):
    with pytest.raises(ThinkDiffError, match=f"^need 0 < min_pixels <= max_pixels, got {min_pixels} and {max_pixels}$"):
        fit_to_pixel_budget([Image.new("RGB", (50, 50))], min_pixels=min_pixels, max_pixels=max_pixels)


def test_out_of_range_values_are_clamped_not_wrapped():
    """ComfyUI images are 0..1, but nodes upstream can overshoot: -0.5 must become 0 and 1.5 255 (not wrap around)."""
    (image,) = tensor_to_pil(torch.tensor([[[-0.5, 0.25, 1.5]]]))
    assert image.getpixel((0, 0)) == (0, 64, 255)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_pil_images_in_a_list_become_rgb(mode):
    (image,) = as_pil_list([Image.new(mode, (8, 8))])
    assert image.mode == "RGB"


@pytest.mark.parametrize(("size", "min_pixels", "max_pixels"), [((1000, 700), 3136, 65536), ((50, 40), 200704, 1003520),
                                                                 ((640, 480), 3136, 3136), ((28, 28), 1, 784)])
def test_sizes_are_qwen2_vls_for_any_budget(size, min_pixels, max_pixels):
    """transformers' own smart_resize (the processor's), with budgets other than its defaults; min == max is allowed."""
    height, width = smart_resize(size[1], size[0], factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
    (image,) = fit_to_pixel_budget([Image.new("RGB", size)], min_pixels=min_pixels, max_pixels=max_pixels)
    assert image.size == (width, height)


def test_a_side_thinner_than_a_patch_is_first_scaled_up_to_one_patch():
    """10x200 keeps its aspect ratio while reaching 28 px (28x560), then the processor's resize applies."""
    height, width = smart_resize(560, 28, factor=28, min_pixels=REFERENCE_MIN_PIXELS, max_pixels=REFERENCE_MAX_PIXELS)
    assert fit_to_pixel_budget([Image.new("RGB", (10, 200))])[0].size == (width, height)
