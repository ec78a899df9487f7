"""ThinkDiff's chat format for Qwen2-VL.

The reference wraps every request as ``system: "You are a helpful assistant."`` plus one user turn of
interleaved image and text parts, rendered with the Qwen2-VL-Instruct chat template and
``add_generation_prompt=True``; several images get ``Picture k: `` labels (``add_vision_id``).
Users write ``<image>`` where each image goes; without placeholders the images come first, as in
the reference's single-image scripts. A prompt may be empty when images are given (the reference's
image + extra-text demo asks Qwen about the image alone).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from .errors import ThinkDiffError

SYSTEM_PROMPT = "You are a helpful assistant."
IMAGE_PLACEHOLDER = "<image>"
PictureLabels = Literal["auto", "on", "off"]

# The chat template of Qwen/Qwen2-VL-7B-Instruct (tokenizer_config.json), shipped here so that the
# rendered prompt never depends on what a model folder happens to carry.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_PLACEHOLDER_RE = re.compile(re.escape(IMAGE_PLACEHOLDER), re.IGNORECASE)


def user_content(prompt: str, num_images: int) -> list[dict[str, str]]:
    """Split ``prompt`` at ``<image>`` placeholders into the user turn's interleaved parts."""
    texts = _PLACEHOLDER_RE.split(prompt)
    placeholders = len(texts) - 1
    if placeholders == 0:
        texts = [""] * num_images + [prompt]
    elif placeholders != num_images:
        raise ThinkDiffError(
            f"the prompt has {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {num_images} image(s) are connected. "
            f"Write one {IMAGE_PLACEHOLDER} per image (images are used in batch order), or none to put all images first.")
    if not num_images and not "".join(texts).strip():
        raise ThinkDiffError("the prompt has no text and there is no image: write the instruction the VLM should answer "
                             "(e.g. 'Describe the next picture as a diffusion prompt.'), or connect an image.")
    parts: list[dict[str, str]] = []
    for i, text in enumerate(texts):
        if i > 0:
            parts.append({"type": "image"})
        if text:
            parts.append({"type": "text", "text": text})
    return parts


def chat_messages(prompt: str, num_images: int) -> list[dict[str, Any]]:
    """The reference's messages: the system prompt and one interleaved user turn."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_content(prompt, num_images)}]


def use_picture_labels(mode: PictureLabels, num_images: int, has_text: bool) -> bool:
    """``auto`` labels pictures as the reference's scripts do: when there are several (the multi-image scripts), and
    when images come with no text (the image + extra-text demo renders its lone image as ``Picture 1: ``)."""
    if mode not in ("auto", "on", "off"):
        raise ThinkDiffError(f"picture_labels must be auto, on or off, not {mode!r}")
    return (num_images > 1 or (num_images > 0 and not has_text)) if mode == "auto" else mode == "on"


def render_chat(tokenizer: Any, prompt: str, num_images: int, picture_labels: PictureLabels = "auto") -> str:
    """Render the chat prompt text (with one ``<|image_pad|>`` per image) using the Qwen2-VL template.

    An empty prompt with images gives a user turn of the images alone, as the reference's image + extra-text demo.
    """
    has_text = bool(_PLACEHOLDER_RE.sub("", prompt).strip())
    return tokenizer.apply_chat_template(
        chat_messages(prompt, num_images), chat_template=QWEN2_VL_CHAT_TEMPLATE, tokenize=False,
        add_generation_prompt=True, add_vision_id=use_picture_labels(picture_labels, num_images, has_text))
