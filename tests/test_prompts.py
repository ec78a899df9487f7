"""The reference chat format rendered with the real Qwen2 tokenizer."""

import pytest

from thinkdiff.errors import ThinkDiffError
from thinkdiff.prompts import QWEN2_VL_CHAT_TEMPLATE, chat_messages, render_chat, user_content

HEAD = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
TAIL = "<|im_end|>\n<|im_start|>assistant\n"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def test_no_image(qwen_tokenizer):
    assert render_chat(qwen_tokenizer, "a photo of a pink skateboard", 0) == HEAD + "a photo of a pink skateboard" + TAIL


def test_one_image_goes_first_without_placeholder(qwen_tokenizer):
    # thinkdiff-reference.md 3.3: image part, then the text part, no picture label
    prompt = "Create an diffusion prompt for a dog in the style of this picture."
    assert render_chat(qwen_tokenizer, prompt, 1) == HEAD + IMAGE + prompt + TAIL


def test_several_images_interleaved_with_picture_labels(qwen_tokenizer):
    # thinkdiff-reference.md 7.2: the CoBSAT prompt with add_vision_id=True
    instruction = "I give you several words and pictures.\n\n"
    prompt = instruction + "Word 1: blue, <image>\n\nWord 2: brown, <image>\n\nWord 3: orange, "
    expected = (HEAD + instruction + "Word 1: blue, Picture 1: " + IMAGE + "\n\nWord 2: brown, Picture 2: " + IMAGE
                + "\n\nWord 3: orange, " + TAIL)
    assert render_chat(qwen_tokenizer, prompt, 2) == expected


def test_picture_labels_can_be_forced(qwen_tokenizer):
    assert render_chat(qwen_tokenizer, "x", 1, "on") == HEAD + "Picture 1: " + IMAGE + "x" + TAIL
    assert render_chat(qwen_tokenizer, "<image> x <image>", 2, "off") == HEAD + IMAGE + " x " + IMAGE + TAIL


def test_eight_images():
    parts = user_content(" ".join(f"Word {i}: w{i}, <image>" for i in range(8)) + " next", 8)
    assert [p["type"] for p in parts].count("image") == 8
    assert parts[-1] == {"type": "text", "text": " next"}


def test_messages_have_the_reference_system_prompt():
    assert chat_messages("hi", 0)[0] == {"role": "system", "content": "You are a helpful assistant."}


def test_placeholder_count_must_match():
    with pytest.raises(ThinkDiffError, match="2 <image> placeholder.*3 image"):
        user_content("<image> and <image>", 3)


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_prompt_needs_text_or_an_image(prompt):
    with pytest.raises(ThinkDiffError) as e:
        user_content(prompt, 0)
    assert str(e.value) == ("the prompt has no text and there is no image: write the instruction the VLM should answer "
                            "(e.g. 'Describe the next picture as a diffusion prompt.'), or connect an image.")


def test_the_qwen2_vl_template_is_used_whatever_the_tokenizers_own(qwen_tokenizer, monkeypatch):
    """A Qwen2-VL folder whose tokenizer carries another chat template (or none) still gets the reference's chat."""
    monkeypatch.setattr(qwen_tokenizer, "chat_template", "{{ 'another template' }}")
    assert render_chat(qwen_tokenizer, "a photo of a pink skateboard", 1) == HEAD + IMAGE + "a photo of a pink skateboard" + TAIL


@pytest.mark.parametrize("prompt", ["", "<image>"])
def test_images_alone_are_the_image_plus_text_demos_chat(qwen_tokenizer, prompt):
    """test_mllama_t5_decoder_flux_multi_image_input.py: the image with empty text parts around it, add_vision_id=True."""
    demo = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "image"}, {"type": "text", "text": ""}]}]
    expected = qwen_tokenizer.apply_chat_template(demo, chat_template=QWEN2_VL_CHAT_TEMPLATE, tokenize=False,
                                                  add_generation_prompt=True, add_vision_id=True)
    assert render_chat(qwen_tokenizer, prompt, 1) == expected == HEAD + "Picture 1: " + IMAGE + TAIL
    assert render_chat(qwen_tokenizer, prompt, 1, "off") == HEAD + IMAGE + TAIL


def test_bad_picture_label_mode(qwen_tokenizer):
    with pytest.raises(ThinkDiffError, match="picture_labels"):
        render_chat(qwen_tokenizer, "x", 1, "sometimes")
