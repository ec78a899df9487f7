"""The node helpers' checks and messages without an executor (``nodes.alignment``, ``nodes.text_encoding``): a real
aligner under ComfyUI's ModelPatcher, and a stand-in CLIP that records what it is asked to encode. The values they
produce are checked end to end in tests/test_comfyui.py."""

from __future__ import annotations

import pytest
import torch

from tests.support.comfy_pack import pack

pytestmark = pytest.mark.comfyui


def patched_aligner(in_dim: int, out_dim: int):
    aligner = pack().aligner.Aligner(in_dim, 16, out_dim)
    aligner.description = f"tiny.safetensors (lvlm aligner {in_dim} -> 16 -> {out_dim})"
    return pack().comfy_models.patcher_for(aligner, torch.device("cpu"))


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(pack().errors.ThinkDiffError) as refused:
        call(*args, **kwargs)
    return str(refused.value)


def test_features_of_another_width_are_refused_naming_both():
    """Image tokens are [images, tokens, width]: the width is the last axis, whatever the others."""
    message = refusal(pack().alignment.align, patched_aligner(9, 12), torch.zeros(2, 65, 7), "the vision encoder")
    assert message.startswith("the vision encoder gives 7-wide features but tiny.safetensors (lvlm aligner 9 -> 16 -> 12) "
                              "expects 9. Use the aligner trained for this encoder")


def test_an_aligner_whose_output_is_not_the_t5s_width_is_refused_before_it_runs():
    message = refusal(pack().alignment.aligned_conditioning, patched_aligner(9, 12), torch.zeros(3, 9), "the VLM", t5_width=4096)
    assert message.startswith("tiny.safetensors (lvlm aligner 9 -> 16 -> 12) outputs 12-wide tokens but the connected T5 is "
                              "4096 wide")
    assert refusal(pack().alignment.aligned_conditioning, patched_aligner(9, 12), torch.zeros(3, 7), "the VLM").startswith(
        "the VLM gives 7-wide features")
    text = torch.zeros(1, 5, 10)
    assert "the connected T5 is 10 wide" in refusal(pack().alignment.aligned_conditioning, patched_aligner(9, 12),
                                                     torch.zeros(3, 9), "the VLM", text)


END, PAD = 2, 5  # ids other than the weights (1.0), so that a weight read as an id shows


class RecordingClip:
    """Tokenizes like ComfyUI's CLIPs (a dict of parts, each a list of [(token, weight), ...]); T5's empty prompt is the end
    token and padding. Encodes to zeros of the T5 part's length (plus ``extra`` tokens, as a CLIP that adds its own)."""

    def __init__(self, parts: tuple[str, ...], width: int = 6, pads: int = 3, extra: int = 0) -> None:
        self.parts, self.width, self.pads, self.extra, self.encoded = parts, width, pads, extra, []

    def tokenize(self, text: str) -> dict[str, list]:
        words = [(100 + n, 1.0) for n, _ in enumerate(text.split())]
        return {part: [words + [(END, 1.0)] + [(PAD, 1.0)] * self.pads] for part in self.parts}

    def encode_from_tokens(self, tokens, return_pooled=False):
        self.encoded.append(tokens)
        return torch.zeros(1, len(tokens["t5xxl"][0]) + self.extra, self.width), torch.ones(1, 3)


def test_a_clip_without_t5_is_refused_saying_which_to_load():
    message = refusal(pack().text_encoding.t5_encode, RecordingClip(("l", "g")), "a cat", 8)
    assert message == f"the connected CLIP cannot encode this: {pack().text_encoding.NO_T5}"
    assert refusal(pack().text_encoding.flux_text, RecordingClip(("t5xxl",)), "a cat", 8) == (
        f"the connected CLIP cannot encode this: {pack().text_encoding.NOT_FLUX}")


def test_the_pooled_vector_costs_one_t5_token():
    clip = RecordingClip(("l", "t5xxl"), width=6)
    width, pooled = pack().text_encoding.flux_pooled(clip, "")
    assert width == 6 and torch.equal(pooled, torch.ones(1, 3))
    assert clip.encoded[0]["t5xxl"] == [[(END, 1.0)]]  # the end token alone


def test_t5_prompts_are_cut_or_padded_to_the_length_asked_keeping_the_end_token():
    clip = RecordingClip(("t5xxl",))
    cond, _ = pack().text_encoding.t5_encode(clip, "one two three", 3)
    assert cond.shape == (1, 3, 6) and clip.encoded[0]["t5xxl"] == [[(100, 1.0), (101, 1.0), (END, 1.0)]]
    pack().text_encoding.t5_encode(clip, "one", 5)
    assert clip.encoded[1]["t5xxl"] == [[(100, 1.0), (END, 1.0), (PAD, 1.0), (PAD, 1.0), (PAD, 1.0)]]


def test_a_clip_that_returns_other_token_counts_is_refused():
    assert refusal(pack().text_encoding.t5_encode, RecordingClip(("t5xxl",), extra=77), "a cat", 8) == (
        "this CLIP returned 85 tokens for a 8-token T5 prompt: load only the T5 (or clip_l + t5xxl for Flux).")


def test_t5s_end_and_pad_ids_come_from_the_empty_prompt_and_padding_is_required():
    assert pack().text_encoding.t5_end_and_pad(RecordingClip(("t5xxl",), pads=1)) == (END, PAD)  # [end, pad] is enough
    assert refusal(pack().text_encoding.t5_end_and_pad, RecordingClip(("t5xxl",), pads=0)) == (
        "the connected CLIP's T5 tokenizer does not pad prompts, so its pad token is unknown: load the T5 with DualCLIPLoader "
        "(type flux) or CLIPLoader (type sd3 or cogvideox).")
