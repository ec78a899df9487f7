"""The nodes' ``execute`` without an executor: each node of ``nodes/`` called as ComfyUI calls it, on real tiny models
(aligner, vision tower, Qwen2-VL) under ComfyUI's ModelPatcher, with stand-in CLIPs that encode each token to a known
vector. The values are worked out independently here (the aligner's formula, the token layout each family's text
encoder gives); tests/test_comfyui.py and tests/test_t5_models.py check the same nodes end to end in a real server with
ComfyUI's own CLIPs."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.support.comfy_pack import pack
from tests.support.paths import COMFYUI_VERSION
from tests.support.tiny_models import make_aligner, make_vision
from thinkdiff.aligner_files import load_aligner_weights
from thinkdiff.images import as_pil_list
from thinkdiff.qwen2_vl_sizes import Shapes
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.t5_families import FAMILIES
from thinkdiff.think_memory import think_bytes, typical_think_bytes
from thinkdiff.vlm import VLMRequest

pytestmark = pytest.mark.comfyui
CPU = torch.device("cpu")
END, PAD = 1, 0  # T5's end and pad ids, as ComfyUI's T5 tokenizers give them
POOLED = torch.tensor([[0.5, -1.0, 2.0]])


def token_vector(token: int, width: int) -> torch.Tensor:
    """A stand-in encoder's state for ``token``: distinct per token and per channel."""
    return torch.arange(width, dtype=torch.float32) / 7 + token


def t5_tokens(text: str, min_length: int = 0) -> list[tuple[int, float]]:
    """Words as ids 100, 101, ...; the end token; padding to ``min_length`` (as ComfyUI's T5 tokenizers)."""
    tokens = [(100 + n, 1.0) for n, _ in enumerate(text.split())] + [(END, 1.0)]
    return tokens + [(PAD, 1.0)] * (min_length - len(tokens))


class FluxClip:
    """Tokenizes like Flux's CLIP (``l`` and ``t5xxl`` parts, T5 padded to 4 here); ``encode_from_tokens`` gives each T5
    token's :func:`token_vector`, and a pooled vector that is the CLIP-L part's length."""

    def __init__(self, width: int, parts: tuple[str, ...] = ("l", "t5xxl"), dtype: torch.dtype = torch.float32) -> None:
        self.width, self.parts, self.dtype, self.encoded = width, parts, dtype, []

    def tokenize(self, text: str) -> dict[str, list]:
        return {part: [t5_tokens(text, 4)] for part in self.parts}

    def encode_from_tokens(self, tokens, return_pooled=False):
        self.encoded.append(tokens)
        cond = torch.stack([token_vector(token, self.width) for token, _ in tokens["t5xxl"][0]])[None]
        return cond.to(self.dtype), (POOLED * len(tokens.get("l", [[]])[0])).to(self.dtype)


def aligner_formula(state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """Linear -> GELU (erf) -> Linear -> T5 RMSNorm (eps 1e-6), in fp32: [1, tokens, out]."""
    hidden = F.gelu(features.float() @ state["in_proj.weight"].T + state["in_proj.bias"])
    out = hidden @ state["out_proj.weight"].T + state["out_proj.bias"]
    return (state["norm.weight"] * out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + 1e-6))[None]


@pytest.fixture
def model_folder(monkeypatch, tmp_path: Path):
    """``ComfyUI/models/<folder>`` at ``tmp_path/<folder>`` for this test only."""
    folder_paths = pack().comfy_models.folder_paths

    def use(folder: str) -> Path:
        path = tmp_path / folder
        path.mkdir(exist_ok=True)
        monkeypatch.setitem(folder_paths.folder_names_and_paths, folder, ([str(path)], {".safetensors", ".pth"}))
        return path

    return use


@pytest.fixture
def aligner_file(model_folder) -> Path:
    return make_aligner(model_folder("thinkdiff") / "tiny_lvlm.safetensors", in_dim=6, hidden_dim=10, out_dim=5, seed=3)


@pytest.fixture
def aligner(aligner_file: Path):
    return pack().conditioning_nodes.ThinkDiffAlignerLoader.execute(aligner_file.name)[0]


def features(tokens: int = 3, width: int = 6, dtype: torch.dtype = torch.float32):
    torch.manual_seed(tokens)
    return pack().vlm.VLMOutput(torch.randn(tokens, width).to(dtype), torch.arange(tokens), "an answer")


def test_the_aligner_loader_hands_comfyui_the_files_aligner_in_fp32_cast_layers(aligner, aligner_file: Path):
    weights = load_aligner_weights(aligner_file)
    assert aligner.model.description == "tiny_lvlm.safetensors (lvlm aligner 6 -> 10 -> 5)"
    assert aligner.load_device == pack().comfy_models.mm.get_torch_device() and aligner.size == sum(
        t.numel() * 4 for t in weights.state.values())
    state = aligner.model.state_dict()
    assert state.keys() == weights.state.keys() and all(torch.equal(state[k], weights.state[k].float()) for k in state)
    assert {p.dtype for p in aligner.model.parameters()} == {torch.float32}
    assert isinstance(aligner.model.in_proj, pack().conditioning_nodes.comfy.ops.manual_cast.Linear)


def test_a_bf16_release_aligner_is_loaded_in_fp32(model_folder, aligner_file: Path):
    state = load_aligner_weights(aligner_file).state
    torch.save({k: v.bfloat16() for k, v in state.items()}, model_folder("thinkdiff") / "release_bf16.pth")
    loaded = pack().conditioning_nodes.ThinkDiffAlignerLoader.execute("release_bf16.pth")[0].model
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert all(torch.equal(loaded.state_dict()[k], v.bfloat16().float()) for k, v in state.items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flux_conditioning_without_a_clip_is_the_aligned_features_and_a_zero_pooled_vector(aligner, aligner_file, dtype):
    answer = features(dtype=dtype)
    (cond, extras), = pack().conditioning_nodes.ThinkDiffFluxConditioning.execute(answer, aligner, 2.5, "  \n", 128)[0]
    torch.testing.assert_close(cond, aligner_formula(load_aligner_weights(aligner_file).state, answer.features))
    assert cond.dtype == torch.float32 and extras["guidance"] == 2.5
    assert torch.equal(extras["pooled_output"], torch.zeros(1, 768)) and extras.keys() == {"pooled_output", "guidance"}


def test_flux_conditioning_with_a_clip_takes_clip_ls_pooled_vector_of_the_empty_prompt(aligner, aligner_file):
    clip, answer = FluxClip(width=5, dtype=torch.float64), features()
    (cond, extras), = pack().conditioning_nodes.ThinkDiffFluxConditioning.execute(answer, aligner, 3.5, "", 128, clip)[0]
    torch.testing.assert_close(cond, aligner_formula(load_aligner_weights(aligner_file).state, answer.features))
    assert torch.equal(extras["pooled_output"], POOLED * 4) and extras["guidance"] == 3.5
    assert extras["pooled_output"].dtype == torch.float32  # the conditioning's dtype, whatever the CLIP's
    assert clip.encoded == [{"l": [t5_tokens("", 4)], "t5xxl": [[(END, 1.0)]]}]  # the empty prompt; T5 cut to its end


def test_flux_conditioning_with_text_appends_its_t5_tokens_after_the_aligned_ones(aligner, aligner_file):
    clip, answer = FluxClip(width=5, dtype=torch.float64), features(tokens=2)
    (cond, extras), = pack().conditioning_nodes.ThinkDiffFluxConditioning.execute(answer, aligner, 1.0, "a red car", 6,
                                                                                   clip)[0]
    text = torch.stack([token_vector(t, 5) for t in (100, 101, 102, END, PAD, PAD)])[None]
    expected = torch.cat([aligner_formula(load_aligner_weights(aligner_file).state, answer.features), text], dim=1)
    torch.testing.assert_close(cond, expected)
    assert torch.equal(extras["pooled_output"], POOLED * 4) and extras["guidance"] == 1.0
    assert cond.dtype == extras["pooled_output"].dtype == torch.float32


def test_flux_conditioning_refuses_text_without_a_clip_and_a_t5_of_another_width(aligner):
    errors = pack().errors
    with pytest.raises(errors.ThinkDiffError, match=r"^text is set but no CLIP is connected: connect the Flux DualCLIPLoader "
                                                    r"to clip, or clear the text\.$"):
        pack().conditioning_nodes.ThinkDiffFluxConditioning.execute(features(), aligner, 3.5, "a car", 128)
    for text in ("", "a car"):
        with pytest.raises(errors.ThinkDiffError, match="outputs 5-wide tokens but the connected T5 is 7 wide"):
            pack().conditioning_nodes.ThinkDiffFluxConditioning.execute(features(), aligner, 3.5, text, 8, FluxClip(7))


@pytest.mark.parametrize(("with_clip", "text"), [(False, ""), (True, ""), (True, "a car")])  # text without a CLIP: above
def test_the_vlm_nodes_name_the_vlm_when_its_features_are_another_width(aligner, with_clip, text):
    nodes = pack()
    clip = FluxClip(5) if with_clip else None
    calls = [lambda: nodes.conditioning_nodes.ThinkDiffFluxConditioning.execute(features(width=7), aligner, 3.5, text, 8,
                                                                                 clip),
             lambda: nodes.t5_nodes.ThinkDiffT5Conditioning.execute(features(width=7), aligner, T5FamilyClip("PixArtTokenizer"),
                                                                    text)]
    for call in calls:
        with pytest.raises(nodes.errors.ThinkDiffError, match=r"^the VLM gives 7-wide features but tiny_lvlm\.safetensors"):
            call()


def test_the_image_token_nodes_name_the_vision_encoder_when_its_tokens_are_another_width(clip_aligner):
    nodes, aligner, tokens = pack(), clip_aligner[0], torch.zeros(1, 4, 7)
    calls = [lambda: nodes.clip_nodes.ThinkDiffCLIPFluxConditioning.execute(tokens, aligner, FluxClip(5), "a", 3.5, 4),
             lambda: nodes.clip_nodes.ThinkDiffCogVideoXWrapperEmbeds.execute(tokens, aligner, FluxClip(5, ("t5xxl",)), "a", "",
                                                                             10),
             lambda: nodes.t5_nodes.ThinkDiffCLIPT5Conditioning.execute(tokens, aligner, T5FamilyClip("PixArtTokenizer"), "")]
    for call in calls:
        with pytest.raises(nodes.errors.ThinkDiffError, match=r"^the vision encoder gives 7-wide features but tiny_clip"):
            call()


def with_node_id(node: type, node_id: str | None) -> type:
    """The node class as the executor runs it: a subclass whose hidden inputs hold its id."""
    hidden = pack().vlm_nodes.io.HiddenHolder.from_dict({pack().vlm_nodes.io.Hidden.unique_id: node_id})
    return type(node.__name__, (node,), {"hidden": hidden})


@pytest.fixture
def progress(monkeypatch) -> list[tuple]:
    """Every progress update ComfyUI's bars send: (value, total, node id)."""
    utils = pack().vlm_nodes.comfy.utils
    updates: list[tuple] = []
    monkeypatch.setattr(utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: updates.append(
        (value, total, node_id)))
    return updates


@pytest.fixture
def interrupt_checks(monkeypatch) -> list[int]:
    """Counts ComfyUI's Cancel checks."""
    calls: list[int] = []
    monkeypatch.setattr(pack().vlm_nodes.mm, "throw_exception_if_processing_interrupted", lambda: calls.append(1))
    return calls


@pytest.fixture
def vision(model_folder):
    path = make_vision(model_folder("thinkdiff") / "tiny_vision.safetensors")
    return pack().clip_nodes.ThinkDiffVisionLoader.execute(path.name, "fp32", "cpu")[0]


def test_the_vision_loader_hands_comfyui_the_tower_in_the_dtype_and_on_the_device_asked(model_folder, monkeypatch):
    path = make_vision(model_folder("thinkdiff") / "tiny_vision.safetensors")
    loader = pack().clip_nodes.ThinkDiffVisionLoader
    monkeypatch.setattr(pack().comfy_models.mm, "get_torch_device", lambda: torch.device("meta"))  # ComfyUI's main device
    patcher = loader.execute(path.name, "fp16", "cpu")[0]
    assert patcher.load_device == CPU and {p.dtype for p in patcher.model.parameters()} == {torch.float16}
    assert patcher.size == sum(p.numel() * 2 for p in patcher.model.parameters()) + sum(
        b.numel() * b.element_size() for b in patcher.model.buffers())
    assert loader.execute(path.name, "fp32", "default")[0].load_device == torch.device("meta")


def test_image_encode_gives_each_images_tokens_in_order_in_chunks_of_eight(vision, progress, interrupt_checks):
    torch.manual_seed(0)
    images = torch.rand(10, 32, 40, 3)
    tokens = with_node_id(pack().clip_nodes.ThinkDiffImageEncode, "9").execute(vision, images)[0]
    pictures = [Image.fromarray((image.numpy() * 255).round().astype("uint8")) for image in images]
    expected = torch.cat([vision.model.encode([picture]) for picture in pictures])
    assert tokens.shape == (10, 65, 48) and tokens.dtype == torch.float32 and tokens.device == CPU
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-4)
    assert progress == [(8, 10, "9"), (10, 10, "9")] and len(interrupt_checks) == 2


@pytest.fixture
def clip_aligner(model_folder) -> tuple:
    path = make_aligner(model_folder("thinkdiff") / "tiny_clip.safetensors", in_dim=6, hidden_dim=8, out_dim=5, seed=4,
                        variant="clip")
    return pack().conditioning_nodes.ThinkDiffAlignerLoader.execute(path.name)[0], load_aligner_weights(path).state


def image_tokens(images: int, tokens: int = 4) -> torch.Tensor:
    torch.manual_seed(images)
    return torch.randn(images, tokens, 6)


def text_states(text: str, length: int, width: int = 5) -> torch.Tensor:
    """The stand-in T5's states of ``text`` cut or padded to ``length`` tokens, keeping the end token."""
    ids = [100 + n for n, _ in enumerate(text.split())][:length - 1] + [END]
    return torch.stack([token_vector(t, width) for t in ids + [PAD] * (length - len(ids))])[None]


def test_clip_flux_conditioning_is_the_aligned_image_tokens_then_the_text(clip_aligner):
    aligner, state = clip_aligner
    tokens = image_tokens(2)
    (cond, extras), = pack().clip_nodes.ThinkDiffCLIPFluxConditioning.execute(tokens, aligner, FluxClip(5, dtype=torch.float64),
                                                                              "a dog", 3.0, 3)[0]
    expected = torch.cat([aligner_formula(state, tokens.reshape(8, 6)), text_states("a dog", 3)], dim=1)
    torch.testing.assert_close(cond, expected)
    assert torch.equal(extras["pooled_output"], POOLED * 4) and extras["guidance"] == 3.0
    assert cond.dtype == extras["pooled_output"].dtype == torch.float32


@pytest.mark.parametrize("node", ["ThinkDiffCogVideoXConditioning", "ThinkDiffCogVideoXWrapperEmbeds"])
def test_cogvideox_embeds_are_aligned_images_then_text_to_the_total_and_a_negative_of_that_length(clip_aligner, node,
                                                                                                   monkeypatch):
    aligner, state = clip_aligner
    monkeypatch.setattr(pack().clip_nodes, "native_cogvideox_available", lambda: True)  # ComfyUI 0.3.75 has none
    tokens = image_tokens(1, tokens=4)
    positive, negative = getattr(pack().clip_nodes, node).execute(tokens, aligner, FluxClip(5, ("t5xxl",), torch.float64),
                                                                   "a b c d e f g",
                                                                   "blurry", 10)
    if node == "ThinkDiffCogVideoXConditioning":
        assert positive[0][1] == {} and negative[0][1] == {} and len(positive) == len(negative) == 1
        positive, negative = positive[0][0], negative[0][0]
    expected = torch.cat([aligner_formula(state, tokens[0]), text_states("a b c d e f g", 6)], dim=1)
    torch.testing.assert_close(positive, expected)
    torch.testing.assert_close(negative, text_states("blurry", 10))
    assert positive.dtype == negative.dtype == torch.float32  # the aligner's, whatever the CLIP's


def test_cogvideox_needs_room_for_text_and_a_native_cogvideox(clip_aligner, monkeypatch):
    aligner, _ = clip_aligner
    nodes, clip = pack().clip_nodes, FluxClip(5, ("t5xxl",))
    assert nodes.native_cogvideox_available() == (COMFYUI_VERSION != "0.3.75")  # 0.33 has comfy/ldm/cogvideo
    one_left = nodes.ThinkDiffCogVideoXWrapperEmbeds.execute(image_tokens(1, 9), aligner, clip, "a b", "", 10)
    torch.testing.assert_close(one_left[0][:, 9:], text_states("", 1))  # the end token alone
    with pytest.raises(pack().errors.ThinkDiffError, match=r"^2 image\(s\) give 10 tokens, leaving no room for text in 10: "
                                                           r"use fewer images \(CogVideoX reads 226 tokens\)\.$"):
        nodes.ThinkDiffCogVideoXWrapperEmbeds.execute(image_tokens(2, 5), aligner, clip, "a", "", 10)
    monkeypatch.setattr(nodes, "native_cogvideox_available", lambda: False)
    with pytest.raises(pack().errors.ThinkDiffError, match=r"^this ComfyUI has no native CogVideoX \(it arrived in ComfyUI "
                                                           r"0\.21\): update ComfyUI, or use 'ThinkDiff-CLIP → CogVideoX Wrapper "
                                                           r"Embeds' with https://github\.com/kijai/ComfyUI-CogVideoXWrapper\.$"):
        nodes.ThinkDiffCogVideoXConditioning.execute(image_tokens(1), aligner, clip, "a", "", 10)


class T5FamilyClip:
    """A stand-in for ComfyUI's CLIP of one T5 family: its tokenizer's class name is the family's key; it pads T5 to the
    ``t5xxl_min_length`` it is given; its encoding is SD3's 77 CLIP-L/G tokens (zeros) before the T5 part, or the T5 part
    alone, with ``attention_mask`` over the T5 part for masked families (1 for each token, 0 for padding)."""

    def __init__(self, tokenizer: str, width: int = 5, t5_loaded: bool | None = True) -> None:
        """``t5_loaded``: None for a model without a ``t5xxl`` attribute at all (the T5 is its only encoder)."""
        self.tokenizer = type(tokenizer, (), {})()
        parts = {} if t5_loaded is None else {"t5xxl": object() if t5_loaded else None}
        self.cond_stage_model = type("Model", (), parts)()
        self.width, self.options = width, []

    def tokenize(self, text: str, tokenizer_options: dict) -> dict[str, list]:
        self.options.append(tokenizer_options)
        return {"t5xxl": [t5_tokens(text, tokenizer_options["t5xxl_min_length"])]}

    def encode_from_tokens_scheduled(self, tokens: dict[str, list]) -> list[list]:
        t5 = [token for token, _ in tokens["t5xxl"][0]]
        states = torch.stack([token_vector(token, self.width) for token in t5])[None]
        if type(self.tokenizer).__name__ == "SD3Tokenizer":
            states = torch.cat([torch.zeros(1, 77, self.width), states], dim=1)
        extras = {"pooled_output": POOLED}
        if FAMILIES[type(self.tokenizer).__name__].masked:
            extras["attention_mask"] = torch.tensor([[float(token != PAD) for token in t5]])
        return [[states, extras]]


@pytest.mark.parametrize(("family", "text", "answer_tokens", "asked", "text_length"), [
    ("LTXVT5Tokenizer", "a red car", 3, 125, 125),  # the text fills LTX-Video's 128 tokens after the 3 aligned ones
    ("LTXVT5Tokenizer", "", 3, 125, 125),  # no text: the empty prompt's end token and padding fill them
    ("LTXVT5Tokenizer", "", 130, 1, 0),  # the aligned tokens reach the minimum: no text part at all
    ("LTXVT5Tokenizer", "a red car", 130, 1, 4),  # past the minimum, the text is its own tokens and end token
    ("SD3Tokenizer", "a dog", 2, 75, 75),  # SD3's CLIP-L/G part stays in front of the T5 part
    ("PixArtTokenizer", "", 2, 1, 0),
    ("CogVideoXTokenizer", "a", 226, 1, 2),
])
def test_t5_model_conditioning_puts_the_aligned_answer_at_the_start_of_the_t5_part(aligner, aligner_file, family, text,
                                                                                    answer_tokens, asked, text_length):
    """``asked``: the minimum T5 length the CLIP's tokenizer is given (ComfyUI's tokenizers take at least 1)."""
    clip, answer = T5FamilyClip(family), features(tokens=answer_tokens)
    (cond, extras), = pack().t5_nodes.ThinkDiffT5Conditioning.execute(answer, aligner, clip, text)[0]
    aligned = aligner_formula(load_aligner_weights(aligner_file).state, answer.features)
    prefix = torch.zeros(1, 77 if family == "SD3Tokenizer" else 0, 5)
    torch.testing.assert_close(cond, torch.cat([prefix, aligned, text_states(text, text_length)[:, :text_length]], dim=1))
    assert clip.options == [{"t5xxl_min_length": asked}]
    assert torch.equal(extras["pooled_output"], POOLED)
    if FAMILIES[family].masked:
        words = len(text.split()) + 1 if text_length else 0
        assert extras["attention_mask"].tolist() == [[1.0] * (answer_tokens + words) + [0.0] * (text_length - words)]
    else:
        assert "attention_mask" not in extras


def test_clip_t5_conditioning_aligns_every_images_tokens_in_order(clip_aligner):
    aligner, state = clip_aligner
    tokens = image_tokens(2, tokens=3)
    (cond, _), = pack().t5_nodes.ThinkDiffCLIPT5Conditioning.execute(tokens, aligner, T5FamilyClip("MochiT5Tokenizer"),
                                                                     "a cat")[0]
    expected = torch.cat([aligner_formula(state, tokens.reshape(6, 6)), text_states("a cat", 250)], dim=1)
    torch.testing.assert_close(cond, expected)


def test_t5_conditioning_refuses_other_text_encoders_saying_what_to_load(aligner):
    node = pack().t5_nodes.ThinkDiffT5Conditioning
    with pytest.raises(pack().errors.ThinkDiffError, match=r"^the connected SD3 / SD3.5 text encoder has no T5-XXL loaded: "
                                                           r"add t5xxl \(TripleCLIPLoader clip_l \+ clip_g \+ t5xxl, or "
                                                           r"CLIPLoader type sd3 with t5xxl alone\)\.$"):
        node.execute(features(), aligner, T5FamilyClip("SD3Tokenizer", t5_loaded=False), "")
    with pytest.raises(pack().errors.ThinkDiffError, match="it is Flux's text encoder"):
        node.execute(features(), aligner, T5FamilyClip("FluxTokenizer"), "")
    with pytest.raises(pack().errors.ThinkDiffError, match="outputs 5-wide tokens but the connected T5 is 4 wide"):
        node.execute(features(), aligner, T5FamilyClip("PixArtTokenizer", width=4), "")
    assert node.execute(features(), aligner, T5FamilyClip("PixArtTokenizer", t5_loaded=None), "")[0][0][0].shape == (1, 3, 5)


@pytest.fixture
def vlm_name(model_folder, tiny_vlm_folder: Path) -> str:
    (model_folder("LLM") / "Qwen" / "tiny").parent.mkdir()
    (model_folder("LLM") / "Qwen" / "tiny").symlink_to(tiny_vlm_folder, target_is_directory=True)
    return "Qwen/tiny"


@pytest.mark.parametrize(("dtype", "weights"), [("fp32", "default"), ("bf16", "default"), ("bf16", "fp8_e4m3fn")])
def test_the_vlm_loader_hands_comfyui_a_streamable_vlm_in_the_precision_asked(vlm_name, dtype, weights, monkeypatch):
    nodes, fits = pack().vlm_nodes, []
    monkeypatch.setattr(nodes.mm, "get_torch_device", lambda: torch.device("meta"))  # ComfyUI's main device
    monkeypatch.setattr(nodes, "check_fits", lambda patcher, stored, working: fits.append((stored, working)))
    patcher = nodes.ThinkDiffVLMLoader.execute(vlm_name, dtype, "cpu", weights)[0]
    encoder, working = patcher.model, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    assert patcher.load_device == CPU and encoder.weights == weights and encoder.manual_cast_dtype == working
    assert patcher.size == sum(t.numel() * t.element_size() for t in (*encoder.parameters(), *encoder.buffers()))
    layer = encoder.model.lm_head
    assert hasattr(layer, "comfy_cast_weights") and layer.weight.dtype == (
        torch.float8_e4m3fn if weights == "fp8_e4m3fn" else working)
    rotary = pack().streaming.buffer_modules(encoder.model)
    assert rotary and len(patcher.get_all_callbacks(pack().streaming.CallbacksMP.ON_LOAD)) == 1
    # checked against the GPU's memory with the think's typical working memory, a cast copy included (not bitsandbytes)
    assert fits == [(weights, typical_think_bytes(Shapes.of(encoder.model.config), True, working.itemsize))]


def test_the_vlm_loader_defaults_to_the_default_weights(vlm_name):
    """A workflow saved before the ``weights`` input existed loads as before."""
    assert pack().vlm_nodes.ThinkDiffVLMLoader.execute(vlm_name, "fp32", "cpu")[0].model.weights == "default"


class PromptServerRecorder:
    """ComfyUI's PromptServer as far as the Think node uses it: the texts it streams onto a node."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def send_progress_text(self, text: str, node_id: str) -> None:
        self.texts.append((text, node_id))


@pytest.fixture
def prompt_server(monkeypatch) -> PromptServerRecorder:
    """ComfyUI's ``server`` module with the recorder as its running PromptServer (ComfyUI 0.3.75's cannot be imported
    outside its own start-up)."""
    recorder = PromptServerRecorder()
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=recorder)))
    return recorder


@pytest.mark.parametrize(("greedy", "stop_at_eos"), [(False, False), (True, True)])
def test_the_think_node_answers_as_the_library_and_streams_progress_and_text(vlm_name, encoder, progress, prompt_server,
                                                                           greedy, stop_at_eos):
    vlm = pack().vlm_nodes.ThinkDiffVLMLoader.execute(vlm_name, "fp32", "cpu", "default")[0]
    torch.manual_seed(1)
    images = torch.rand(2, 40, 60, 3)
    settings = dict(seed=5, max_new_tokens=4, temperature=0.7, top_p=0.8, greedy=greedy, stop_at_eos=stop_at_eos)
    node = with_node_id(pack().vlm_nodes.ThinkDiffVLMEncode, "12")
    output = node.execute(vlm, "<image> and <image>: what now?", **settings, picture_labels="off", min_pixels=3136,
                          max_pixels=6272, images=images)
    answer, text = output.args
    (expected,) = encoder.encode([VLMRequest("<image> and <image>: what now?", as_pil_list(images), "off")],
                                 SamplingOptions(**settings), min_pixels=3136, max_pixels=6272)
    torch.testing.assert_close(answer.features, expected.features)
    assert torch.equal(answer.token_ids, expected.token_ids) and text == answer.text == expected.text
    assert output.ui.as_dict() == {"text": (expected.text,)}
    assert progress[0] == (1, 4, "12") and progress[-1] == (4, 4, "12")
    assert [node_id for _, node_id in prompt_server.texts] == ["12"] * 4
    assert prompt_server.texts[-1][0] == encoder.processor.tokenizer.decode(expected.token_ids)


def test_cancel_stops_the_think_at_the_next_token_before_it_is_shown(vlm_name, monkeypatch, prompt_server):
    nodes = pack().vlm_nodes
    vlm = nodes.ThinkDiffVLMLoader.execute(vlm_name, "fp32", "cpu", "default")[0]
    shown = []

    def cancelled_after_two_tokens() -> None:  # ComfyUI's own loading checks too
        if len(shown) == 2:
            raise nodes.mm.InterruptProcessingException()

    monkeypatch.setattr(nodes.mm, "throw_exception_if_processing_interrupted", cancelled_after_two_tokens)
    with pytest.raises(nodes.mm.InterruptProcessingException):
        nodes.think(vlm, pack().vlm.VLMRequest("a cat"), pack().sampling_options.SamplingOptions(max_new_tokens=6), 3136,
                    6272, lambda step, total, ids: shown.append((step, total, ids.shape[-1])))
    assert [(step, total) for step, total, _ in shown] == [(1, 6), (2, 6)] and shown[1][2] == shown[0][2] + 1
    nodes._show_text("a cat", None)  # without a node id nothing is streamed
    assert prompt_server.texts == []


def test_the_think_reserves_its_inputs_working_memory_and_the_largest_cast_copy(vlm_name, monkeypatch):
    nodes = pack().vlm_nodes
    encoder = nodes.ThinkDiffVLMLoader.execute(vlm_name, "fp32", "cpu", "default")[0].model
    shapes, largest_copy = Shapes.of(encoder.model.config), max(p.numel() for p in encoder.parameters()) * 4
    picture = pack().vlm.VLMRequest("<image> what is it?", [Image.new("RGB", (280, 252), "red")])
    inputs = encoder.prepare([picture, picture], 3136, 100352, 5)
    patches = 2 * (280 // 14) * (252 // 14)
    assert inputs["pixel_values"].shape[0] == patches
    with_images = think_bytes(shapes, inputs["input_ids"].shape[1], 5, patches, 2, 4)
    assert with_images > think_bytes(shapes, inputs["input_ids"].shape[1], 5, 0, 2, 4)  # the vision tower's term counts
    assert nodes.think_memory_required(encoder, inputs, 5) == with_images + largest_copy
    text = encoder.prepare([pack().vlm.VLMRequest("a cat")], 3136, 12544, 7)
    assert nodes.think_memory_required(encoder, text, 7) == think_bytes(shapes, text["input_ids"].shape[1], 7, 0, 1, 4) + (
        largest_copy)
    monkeypatch.setattr(encoder, "weights", "bnb_nf4")  # bitsandbytes layers compute without a working-precision copy
    assert nodes.think_memory_required(encoder, inputs, 5) == with_images


def test_the_think_loads_default_and_fp8_vlms_streamable_and_bitsandbytes_whole(vlm_name, monkeypatch):
    nodes, loads = pack().vlm_nodes, []
    real = nodes.load_for_use
    monkeypatch.setattr(nodes, "load_for_use", lambda patcher, streamable=False, memory_required=0: loads.append(
        streamable) or real(patcher, streamable, memory_required))
    vlm = nodes.ThinkDiffVLMLoader.execute(vlm_name, "fp32", "cpu", "default")[0]
    sampling = SamplingOptions(max_new_tokens=1)
    nodes.think(vlm, pack().vlm.VLMRequest("a cat"), sampling, 3136, 12544)
    monkeypatch.setattr(vlm.model, "weights", "bnb_nf4")  # as a bitsandbytes VLM says of itself
    nodes.think(vlm, pack().vlm.VLMRequest("a cat"), sampling, 3136, 12544)
    assert loads == [True, False]


@pytest.mark.parametrize(("stop_at_eos", "tokens"), [(True, 2), (False, 5)])
def test_stop_at_eos_reaches_the_sampler(vlm_name, prompt_server, stop_at_eos, tokens):
    """A head pushed to the end token from the 2nd token on: with stop_at_eos the answer ends there."""
    vlm = pack().vlm_nodes.ThinkDiffVLMLoader.execute(vlm_name, "fp32", "cpu", "default")[0]
    eos = vlm.model.eos_token_id if isinstance(vlm.model.eos_token_id, int) else vlm.model.eos_token_id[0]
    calls = []

    def to_the_end(_module, _inputs, logits):
        calls.append(1)
        return logits if len(calls) < 2 else logits.index_add(-1, torch.tensor([eos]), torch.full((*logits.shape[:-1], 1),
                                                                                                  1e4))

    vlm.model.model.lm_head.register_forward_hook(to_the_end)
    answer = with_node_id(pack().vlm_nodes.ThinkDiffVLMEncode, "1").execute(
        vlm, "a cat", 3, 5, 1.0, 1.0, False, stop_at_eos, "auto", 3136, 12544)[0]
    assert answer.num_tokens == tokens and (int(answer.token_ids[-1]) == eos) == stop_at_eos


def test_a_think_that_would_overflow_the_context_is_refused_before_it_loads(vlm_name, monkeypatch):
    nodes = pack().vlm_nodes
    vlm = nodes.ThinkDiffVLMLoader.execute(vlm_name, "fp32", "cpu", "default")[0]

    def went_on() -> None:  # ComfyUI checks for Cancel while it loads, and the think after every token
        raise AssertionError("the think went on past the refusal")

    monkeypatch.setattr(nodes.mm, "throw_exception_if_processing_interrupted", went_on)
    sampling = SamplingOptions(max_new_tokens=vlm.model.context_length)
    with pytest.raises(pack().errors.ThinkDiffError, match=f"and {vlm.model.context_length} more are to be"):
        nodes.think(vlm, pack().vlm.VLMRequest("a cat"), sampling, 3136, 12544)


def test_without_a_running_server_no_text_is_streamed(monkeypatch):
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace()))
    pack().vlm_nodes._show_text("a cat", "3")  # ComfyUI's PromptServer class before a server sets its instance


def test_clip_t5_conditioning_checks_the_t5_width_before_aligning(clip_aligner):
    with pytest.raises(pack().errors.ThinkDiffError, match="outputs 5-wide tokens but the connected T5 is 4 wide"):
        pack().t5_nodes.ThinkDiffCLIPT5Conditioning.execute(image_tokens(1), clip_aligner[0],
                                                            T5FamilyClip("PixArtTokenizer", width=4), "a")
