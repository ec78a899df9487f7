"""ThinkDiff into every T5-XXL model of ComfyUI (SD3/3.5, Chroma, PixArt-Σ, LTX-Video, Mochi, CogVideoX), in a real server.

Structure parity: with the aligned tokens replaced by the T5's own encoding of a text (TestT5Tokens through
TestIdentityAligner), the nodes' conditioning is core CLIPTextEncode's of that text, on CLIPs built by CLIPLoader's own
code for each type (TinyT5CLIPLoader, a tiny T5).
"""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from tests.support.paths import T5_TOKENIZER
from tests.support.tiny_comfy import TINY_CLIP_ALIGNER, TINY_VISION
from tests.test_comfyui import saved

pytestmark = pytest.mark.comfyui
T5_FILE = "t5xxl-tiny-random.safetensors"
# ComfyUI's minimum T5 prompt length per CLIP type and whether the conditioning has an attention mask (its text encoders)
COMFY_T5 = {"sd3": (77, False), "chroma": (1, False), "pixart": (1, False), "ltxv": (128, True), "mochi": (256, True),
            "cogvideox": (226, False)}
LONG = "a red ball on a wooden table next to a small blue cube, " * 20  # longer than every minimum
SHORT = "a red ball"
NODES = {"features": "ThinkDiffT5Conditioning", "image_tokens": "ThinkDiffCLIPT5Conditioning"}


def t5_length(text: str) -> int:
    """T5 tokens of ``text`` with its end token (the Hugging Face tokenizer ComfyUI ships)."""
    return len(AutoTokenizer.from_pretrained(str(T5_TOKENIZER))(text).input_ids)


def clip_types(object_info) -> list[str]:
    return object_info["TinyT5CLIPLoader"]["input"]["required"]["type"][0]


def needs_type(object_info, clip_type: str) -> None:
    if clip_type not in clip_types(object_info):
        pytest.skip(f"this ComfyUI has no CLIP type {clip_type}")


class Graph(dict):
    """An API graph built node by node; ``info`` saves a CONDITIONING as output/<prefix>.safetensors."""

    def add(self, class_type: str, **inputs) -> list:
        node_id = str(len(self) + 1)
        self[node_id] = {"class_type": class_type, "inputs": inputs}
        return [node_id, 0]

    def info(self, conditioning: list, prefix: str) -> str:
        self.add("TestConditioningInfo", conditioning=conditioning, filename_prefix=prefix)
        return str(len(self))


def thinkdiff(graph: Graph, clip: list, aligned_text: str, text: str) -> dict[str, list]:
    """Both ThinkDiff T5 nodes with the T5 encoding of ``aligned_text`` as their aligned tokens, and ``text`` appended."""
    stand_in = graph.add("TestT5Tokens", clip=clip, text=aligned_text)
    aligner = graph.add("TestIdentityAligner", width=32)
    return {name: graph.add(node, **{name: [stand_in[0], slot]}, aligner=aligner, clip=clip, text=text)
            for slot, (name, node) in enumerate(NODES.items())}


def encode(graph: Graph, clip: list, text: str, min_length: int | None = None) -> list:
    """Core CLIPTextEncode, with the T5 padded to ``min_length`` by core's T5TokenizerOptions when given."""
    if min_length is not None:
        clip = graph.add("T5TokenizerOptions", clip=clip, min_padding=0, min_length=min_length)
    return graph.add("CLIPTextEncode", clip=clip, text=text)


def assert_same(comfy, result, node_id: str, prefix: str, reference_id: str, reference: str) -> None:
    """Equal values, keys (with shapes), attention masks and pooled vectors."""
    assert result.texts(node_id) == result.texts(reference_id)
    ours, theirs = saved(comfy, prefix), saved(comfy, reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


@pytest.mark.parametrize("clip_type", COMFY_T5)
def test_aligned_tokens_reaching_the_minimum_give_clip_text_encodes_conditioning(comfy, object_info, clip_type):
    """T5 states of a long text as the aligned tokens, no text: exactly CLIPTextEncode(text), for both variants."""
    needs_type(object_info, clip_type)
    graph = Graph()
    clip = graph.add("TinyT5CLIPLoader", clip_name=T5_FILE, type=clip_type)
    nodes = thinkdiff(graph, clip, LONG, "")
    infos = {name: graph.info(node, f"{clip_type}_long_{name}") for name, node in nodes.items()}
    reference = graph.info(encode(graph, clip, LONG), f"{clip_type}_long_ref")
    result = comfy.run(graph)
    assert result.ok, result.error
    minimum, masked = COMFY_T5[clip_type]
    layout = json.loads(result.texts(reference)[0])
    assert layout["cond"] == [1, t5_length(LONG), 32] and t5_length(LONG) > minimum
    assert ("attention_mask" in layout) == masked
    for name, info in infos.items():
        assert_same(comfy, result, info, f"{clip_type}_long_{name}", reference, f"{clip_type}_long_ref")


@pytest.mark.parametrize("text", ["", "a blue cube"])
@pytest.mark.parametrize("clip_type", COMFY_T5)
def test_the_text_after_few_aligned_tokens_fills_the_minimum_as_clip_text_encode_pads(comfy, object_info, clip_type,
                                                                                      text):
    """Short aligned tokens (n) then the text: [T5(aligned text), CLIPTextEncode(text) padded to minimum - n], its mask
    led by n ones and its pooled vector; no text part at all when there is no text and n reaches the minimum."""
    needs_type(object_info, clip_type)
    minimum, masked = COMFY_T5[clip_type]
    n = t5_length(SHORT)
    graph = Graph()
    clip = graph.add("TinyT5CLIPLoader", clip_name=T5_FILE, type=clip_type)
    empty = graph.info(encode(graph, clip, ""), f"{clip_type}_empty")
    nodes = thinkdiff(graph, clip, SHORT, text)
    for name, node in nodes.items():
        graph.info(node, f"{clip_type}_short_{name}")
    graph.info(encode(graph, clip, SHORT, min_length=1), f"{clip_type}_aligned_ref")
    text_part = bool(text) or n < minimum
    graph.info(encode(graph, clip, text, min_length=max(minimum - n, 1)), f"{clip_type}_text_ref")
    result = comfy.run(graph)
    assert result.ok, result.error
    assert json.loads(result.texts(empty)[0])["cond"][1] == minimum  # core's own minimum, as this test assumes
    aligned, text_ref = saved(comfy, f"{clip_type}_aligned_ref"), saved(comfy, f"{clip_type}_text_ref")
    assert aligned["0.cond"].shape[1] == n
    parts = [aligned, text_ref] if text_part else [aligned]
    for name in NODES:
        ours = saved(comfy, f"{clip_type}_short_{name}")
        assert ours.keys() == text_ref.keys() and ("0.attention_mask" in ours) == masked
        torch.testing.assert_close(ours["0.cond"], torch.cat([p["0.cond"] for p in parts], dim=1), rtol=0, atol=0)
        if masked:
            expected = torch.cat([torch.ones(1, n)] + ([text_ref["0.attention_mask"]] if text_part else []), dim=1)
            assert torch.equal(ours["0.attention_mask"], expected)
        if "0.pooled_output" in ours:
            assert torch.equal(ours["0.pooled_output"], text_ref["0.pooled_output"])
    length = n + (max(minimum - n, t5_length(text)) if text_part else 0)  # t5_length("") is the end token
    assert saved(comfy, f"{clip_type}_short_features")["0.cond"].shape[1] == length


FLUX_CLIP = ("TinyFluxDualCLIPLoader", {"clip_name1": "clip_l-tiny-random.safetensors", "clip_name2": T5_FILE})


@pytest.mark.parametrize(("loader", "fix"), [
    (FLUX_CLIP, "it is Flux's text encoder (CLIP-L + T5): use 'ThinkDiff → Flux Conditioning'"),
    (("TinyT5CLIPLoader", {"clip_name": T5_FILE, "type": "wan"}), "it is Wan's UMT5-XXL"),
    (("TinyT5CLIPLoader", {"clip_name": T5_FILE, "type": "cosmos"}), "it is Cosmos's original T5 (not v1.1, 1024 wide)"),
    (("TinyT5CLIPLoader", {"clip_name": T5_FILE, "type": "hidream"}),
     "it is HiDream's, which also reads a Llama-3.1 stream that ThinkDiff cannot supply"),
], ids=["flux", "wan", "cosmos", "hidream"])
@pytest.mark.parametrize("node", NODES)
def test_a_wrong_text_encoder_fails_on_the_node_naming_the_fix(comfy, object_info, loader, fix, node):
    """HiDream's CLIP here is CLIPLoader's (type hidream) with its T5 alone, without the Llama it also needs: refused too."""
    graph = Graph()
    chroma = graph.add("TinyT5CLIPLoader", clip_name=T5_FILE, type="chroma")
    wrong = graph.add(loader[0], **loader[1])
    stand_in = graph.add("TestT5Tokens", clip=chroma, text=SHORT)
    aligner = graph.add("TestIdentityAligner", width=32)
    conditioning = graph.add(NODES[node], **{node: [stand_in[0], list(NODES).index(node)]}, aligner=aligner, clip=wrong,
                             text="")
    graph.info(conditioning, "wrong")
    result = comfy.run(graph)
    (error,) = result.messages("execution_error")
    assert error["node_type"] == NODES[node]
    assert f"the connected CLIP cannot read ThinkDiff tokens: {fix}" in result.error
    assert "Load t5xxl (T5-XXL v1.1" in result.error


# The families no shipped workflow samples (the others' workflows run end to end in tests/test_comfyui.py): tiny models
# from ComfyUI's own classes, the model's own VAE, core sampling; an image of the latent's size or the video's frames.
FAMILY_RUNS = {
    "pixart": {"unet": "pixart_sigma-tiny-random.safetensors", "vae": ("VAELoader", {"vae_name": "taesdxl"}),
               # PixArt's position code needs at least a 512-px latent (base size round(H / 64) * 64)
               "latent": ("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}), "frames": 1},
    "mochi": {"unet": "mochi-tiny-random.safetensors",
              "vae": ("TinyMochiVAELoader", {"vae_name": "mochi_vae-tiny-random.safetensors"}),
              "latent": ("EmptyMochiLatentVideo", {"width": 64, "height": 64, "length": 7, "batch_size": 1}), "frames": 7},
}


@pytest.mark.parametrize("clip_type", FAMILY_RUNS)
def test_the_families_without_a_workflow_sample_end_to_end(comfy, object_info, clip_type):
    """PixArt-Σ (SDXL latents, TAESD-XL) and Mochi (its own VAE, 6x temporal: 2 latent frames decode to 7), each from
    ThinkDiff-CLIP image tokens through the T5 Model Conditioning node and a negative from CLIPTextEncode."""
    needs_type(object_info, clip_type)
    run = FAMILY_RUNS[clip_type]
    graph = Graph()
    clip = graph.add("TinyT5CLIPLoader", clip_name=T5_FILE, type=clip_type)
    vision = graph.add("ThinkDiffVisionLoader", vision_name=TINY_VISION, dtype="fp32", device="default")
    image = graph.add("LoadImage", image="thinkdiff_dots.png")
    tokens = graph.add("ThinkDiffImageEncode", vision=vision, images=image)
    aligner = graph.add("ThinkDiffAlignerLoader", aligner_name=TINY_CLIP_ALIGNER)
    positive = graph.add("ThinkDiffCLIPT5Conditioning", image_tokens=tokens, aligner=aligner, clip=clip, text="a dog")
    negative = graph.add("CLIPTextEncode", clip=clip, text="")
    model = graph.add("TinyUNETLoader", unet_name=run["unet"])
    latent = graph.add(run["latent"][0], **run["latent"][1])
    samples = graph.add("KSampler", model=model, seed=0, steps=2, cfg=4.5, sampler_name="euler", scheduler="normal",
                        positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    decoded = graph.add("VAEDecode", samples=samples, vae=graph.add(run["vae"][0], **run["vae"][1]))
    graph.add("SaveAnimatedWEBP", images=decoded, filename_prefix=f"family_{clip_type}", fps=8.0, lossless=False,
              quality=90, method="default")
    result = comfy.run(graph)
    assert result.ok, result.error
    (output,) = result.images()
    animation = Image.open(output)
    size = (run["latent"][1]["width"], run["latent"][1]["height"])
    assert (getattr(animation, "n_frames", 1), animation.size) == (run["frames"], size)
