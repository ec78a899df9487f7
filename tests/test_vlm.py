"""ThinkDiff-LVLM features: hidden-state semantics, sampling, callbacks, batching and bad model folders."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import GenerationConfig, Qwen2VLForConditionalGeneration

from tests.support.ascii_locale import python_in_ascii_locale
from tests.support.tiny_models import BITSANDBYTES_ON_CPU
from thinkdiff import vlm
from thinkdiff.errors import ThinkDiffError
from thinkdiff.images import REFERENCE_MIN_PIXELS, fit_to_pixel_budget
from thinkdiff.prompts import render_chat
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder, VLMRequest, capture_last_position, final_norm, register_tensor_attributes, trim_at_eos

COBSAT = "Word 1: blue, <image>\n\nWord 2: brown, <image>\n\nWord 3: orange, "


@pytest.fixture(scope="module")
def two_images():
    return [Image.new("RGB", (64, 48), (30, 60, 220)), Image.new("RGB", (90, 90), (120, 70, 30))]


def full_forward_states(encoder, inputs, generated):
    """Post-final-norm last-layer states of prompt + generated tokens in one forward pass."""
    sequence = torch.cat([inputs["input_ids"], generated[None]], dim=1)
    extra = {"mm_token_type_ids": (sequence == encoder.model.config.image_token_id).int()} if "mm_token_type_ids" in inputs else {}
    with torch.no_grad():
        out = encoder.model(input_ids=sequence, attention_mask=torch.ones_like(sequence), pixel_values=inputs["pixel_values"],
                            image_grid_thw=inputs["image_grid_thw"], output_hidden_states=True, **extra)
    return out.hidden_states[-1][0]


@pytest.mark.parametrize("greedy", [True, False])
def test_rows_are_the_states_that_sampled_each_token(encoder, two_images, greedy):
    inputs = encoder.prepare([VLMRequest(COBSAT, two_images)])
    (answer,) = encoder.generate(inputs, SamplingOptions(max_new_tokens=12, greedy=greedy, seed=7))
    assert answer.features.shape == (12, encoder.hidden_size) and answer.token_ids.shape == (12,)
    states = full_forward_states(encoder, inputs, answer.token_ids)
    prompt_length = inputs["input_ids"].shape[1]
    # row 0 = last prompt position; row k = position of generated token k-1
    torch.testing.assert_close(answer.features, states[prompt_length - 1: prompt_length + 11], rtol=1e-4, atol=1e-4)


def test_final_norm_output_is_what_is_captured(encoder, two_images):
    """The captured states are post-final-norm: the same as HF's last hidden state (== hidden_states[-1])."""
    inputs = encoder.prepare([VLMRequest("describe <image> and <image>", two_images)])
    (answer,) = encoder.generate(inputs, SamplingOptions(max_new_tokens=1, greedy=True))
    with torch.no_grad():
        out = encoder.model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(answer.features[0], out.hidden_states[-1][0, -1], rtol=1e-4, atol=1e-4)
    logits_token = out.logits[0, -1].argmax()
    assert answer.token_ids[0] == logits_token


def test_text_is_the_decoded_answer(encoder):
    (answer,) = encoder.encode([VLMRequest("a photo of a pink skateboard")], SamplingOptions(max_new_tokens=6))
    assert answer.text == encoder.processor.tokenizer.decode(answer.token_ids, skip_special_tokens=True)


def test_paper_sampling_defaults():
    options = SamplingOptions()
    assert (options.max_new_tokens, options.temperature, options.top_p) == (128, 0.6, 0.9)
    assert not options.greedy and not options.stop_at_eos
    config = options.generation_config(eos_token_id=[151645, 151643], pad_token_id=151643)
    assert (config.max_new_tokens, config.min_new_tokens) == (128, 128)  # keep going past EOS: exactly 128 rows
    assert config.do_sample and config.temperature == 0.6 and config.top_p == 0.9
    assert config.top_k == 0 and config.repetition_penalty == 1.0 and config.num_beams == 1  # vLLM defaults
    assert SamplingOptions(stop_at_eos=True).generation_config(1, 0).min_new_tokens == 1


def test_folder_generation_config_does_not_leak(encoder):
    """Qwen's generation_config.json (top_k 1, repetition_penalty 1.05, temperature 0.01) must not apply."""
    config = encoder.model.generation_config
    assert config.top_k in (None, 50) and config.repetition_penalty in (None, 1.0) and config.temperature in (None, 1.0)
    assert encoder.eos_token_id == [151645, 151643]


def test_seed_reproducibility_without_touching_global_rng(encoder):
    request = [VLMRequest("a photo of a red car")]
    state = torch.random.get_rng_state()
    a = encoder.encode(request, SamplingOptions(max_new_tokens=10, seed=1, temperature=1.5))[0]
    b = encoder.encode(request, SamplingOptions(max_new_tokens=10, seed=1, temperature=1.5))[0]
    c = encoder.encode(request, SamplingOptions(max_new_tokens=10, seed=2, temperature=1.5))[0]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.token_ids, b.token_ids) and torch.equal(a.features, b.features)
    assert not torch.equal(a.token_ids, c.token_ids)


def test_callback_sees_every_token_and_can_cancel_within_one(encoder):
    steps = []

    def on_token(step, total, ids):
        steps.append((step, total, ids.shape[1]))

    encoder.encode([VLMRequest("hello")], SamplingOptions(max_new_tokens=5), on_token)
    assert steps == [(k, 5, k) for k in range(1, 6)]

    class Cancelled(Exception):
        pass

    seen = []

    def cancel_at_three(step, total, ids):
        seen.append(step)
        if step == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        encoder.encode([VLMRequest("hello")], SamplingOptions(max_new_tokens=50), cancel_at_three)
    assert seen == [1, 2, 3]


def test_trim_at_eos_keeps_rows_up_to_the_end_token():
    features, ids = torch.arange(12.0).reshape(6, 2), torch.tensor([5, 9, 7, 9, 3, 1])
    kept_features, kept_ids = trim_at_eos(features, ids, [3, 7])
    assert kept_ids.tolist() == [5, 9, 7] and torch.equal(kept_features, features[:3])
    assert trim_at_eos(features, ids, 4)[1].tolist() == ids.tolist()
    assert trim_at_eos(features, ids, 9)[1].tolist() == [5, 9]  # one end id, as a folder's config may give it


def test_batch_matches_single_requests(encoder, two_images):
    requests = [VLMRequest(COBSAT, two_images), VLMRequest("a short text-only prompt")]
    options = SamplingOptions(max_new_tokens=6, greedy=True)
    batch = encoder.encode(requests, options)
    for request, batched in zip(requests, batch, strict=True):
        (single,) = encoder.encode([request], options)
        assert torch.equal(single.token_ids, batched.token_ids)
        torch.testing.assert_close(single.features, batched.features, rtol=1e-3, atol=1e-3)


def test_eight_images_of_different_sizes(encoder):
    images = [Image.new("RGB", (30 + 10 * i, 40), (20 * i, 0, 0)) for i in range(8)]
    prompt = "".join(f"Word {i}: red, <image> " for i in range(8)) + "next:"
    (answer,) = encoder.encode([VLMRequest(prompt, images)], SamplingOptions(max_new_tokens=3))
    assert answer.num_tokens == 3


@pytest.mark.parametrize(("options", "message"), [
    (SamplingOptions(max_new_tokens=0), "max_new_tokens"),
    (SamplingOptions(temperature=0.0), "temperature"),
    (SamplingOptions(top_p=0.0), "top_p"),
])
def test_bad_sampling_options(encoder, options, message):
    with pytest.raises(ThinkDiffError, match=message):
        encoder.encode([VLMRequest("x")], options)


def test_missing_folder(tmp_path):
    with pytest.raises(ThinkDiffError, match="no config.json.*huggingface-cli download Qwen/Qwen2-VL-7B-Instruct"):
        QwenVLEncoder.from_folder(tmp_path / "missing")


def test_not_a_qwen2vl_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ThinkDiffError, match=r"'llama' model; ThinkDiff-LVLM needs Qwen2-VL \(qwen2_vl, qwen2_5_vl\), e\.g\. "
                                             r"https://huggingface\.co/Qwen/Qwen2-VL-7B-Instruct$"):
        QwenVLEncoder.from_folder(tmp_path)


def test_corrupt_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ThinkDiffError, match="not valid JSON"):
        QwenVLEncoder.from_folder(tmp_path)


def test_missing_weights(tmp_path, tiny_vlm_folder):
    folder = tmp_path / "incomplete"
    shutil.copytree(tiny_vlm_folder, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ThinkDiffError, match="complete download"):
        QwenVLEncoder.from_folder(folder)


def test_missing_tokenizer_files(tmp_path, tiny_vlm_folder):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_vlm_folder, folder)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)
    (folder / "vocab.json").write_text("{}")  # without merges.txt it is no tokenizer either
    with pytest.raises(ThinkDiffError, match=rf"^the tokenizer in {folder} does not know .* tokenizer files are missing"):
        QwenVLEncoder.from_folder(folder)


def test_a_prompt_beyond_the_context_fails_in_prepare_with_the_fix(encoder, two_images, monkeypatch):
    """Checked on the CPU while preparing, before any model runs (the node prepares before loading the VLM)."""
    config = getattr(encoder.model.config, "text_config", encoder.model.config)
    request = [VLMRequest(COBSAT, two_images)]
    prompt_tokens = encoder.prepare(request, max_new_tokens=1)["input_ids"].shape[1]
    monkeypatch.setattr(config, "max_position_embeddings", prompt_tokens + 10)
    assert encoder.prepare(request, max_new_tokens=10)["input_ids"].shape[1] == prompt_tokens  # exactly fits
    inputs = encoder.prepare(request, max_new_tokens=1)
    image_tokens = int((inputs["input_ids"] == encoder.model.config.image_token_id).sum())
    assert 0 < image_tokens < prompt_tokens
    with pytest.raises(ThinkDiffError, match=rf"the prompt is {prompt_tokens} tokens \({image_tokens} of them image tokens\) and 11 more "
                                             rf".* at most {prompt_tokens + 10}.*Lower max_pixels.*shorten the text\. \(The original "
                                             r"ThinkDiff capped prompts at 8,192 tokens\.\)$"):
        encoder.prepare(request, max_new_tokens=11)
    with pytest.raises(ThinkDiffError, match="at most"):
        encoder.encode(request, SamplingOptions(max_new_tokens=11))
    (answer,) = encoder.encode(request, SamplingOptions(max_new_tokens=10, greedy=True))  # checked for the tokens asked
    assert answer.num_tokens == 10


@pytest.mark.parametrize(("damage", "message"), [
    ("header", r"model.safetensors is not a .safetensors file .*the file is damaged; download model.safetensors again from "
               r"https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct"),
    ("dtype", r"could not load the model in .*bad-dtype.*complete download of https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct"),
])
def test_a_damaged_weights_file_is_named_with_the_fix(tmp_path, tiny_vlm_folder, damage, message):
    """A header that is not JSON (caught by reading it), and a whole file whose header names a dtype safetensors does not
    know (caught from safetensors' own error while transformers loads it)."""
    folder = tmp_path / f"bad-{damage}"
    shutil.copytree(tiny_vlm_folder, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header_end = 8 + int.from_bytes(data[:8], "little")
    if damage == "header":
        data[8:header_end] = b"\x00" * (header_end - 8)
    else:
        header = bytes(data[8:header_end])
        assert b'"dtype":"F32"' in header
        data[8:header_end] = header.replace(b'"dtype":"F32"', b'"dtype":"Q32"')
    weights.write_bytes(bytes(data))
    with pytest.raises(ThinkDiffError, match=message):
        QwenVLEncoder.from_folder(folder)


def test_a_truncated_weights_file_is_named_with_the_fix(tmp_path, tiny_vlm_folder):
    folder = tmp_path / "interrupted-download"
    shutil.copytree(tiny_vlm_folder, folder)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    with pytest.raises(ThinkDiffError, match=rf"model.safetensors is truncated \({size // 2:,} of {size:,} bytes.*download "
                                             r"model.safetensors again from https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct"):
        QwenVLEncoder.from_folder(folder)


@pytest.fixture
def eos_from_the_fourth_token(encoder):
    """A biased head: from the 4th forward pass on (the 4th generated token), the end token's logit is +1e4."""
    eos = encoder.eos_token_id[0]
    calls = []

    def bias(_module, _inputs, logits):
        calls.append(1)
        if len(calls) >= 4:
            logits = logits.clone()
            logits[..., eos] += 1e4
        return logits

    handle = encoder.model.lm_head.register_forward_hook(bias)
    yield eos
    handle.remove()


def test_stop_at_eos_stops_at_the_end_token(encoder, eos_from_the_fourth_token):
    (answer,) = encoder.encode([VLMRequest("hello")], SamplingOptions(max_new_tokens=12, stop_at_eos=True))
    assert answer.token_ids.tolist()[-1] == eos_from_the_fourth_token and answer.num_tokens == 4
    assert answer.features.shape[0] == 4


def test_stop_at_eos_trims_each_answer_of_a_batch(encoder):
    """Only the first of two batched prompts is pushed to its end token (at its 4th token): its answer ends there, with
    4 rows and no padding, while the other runs to the cap."""
    eos, calls = encoder.eos_token_id[0], []

    def bias(_module, _inputs, logits):
        calls.append(1)
        if len(calls) >= 4:
            logits = logits.clone()
            logits[0, ..., eos] += 1e4
        return logits

    handle = encoder.model.lm_head.register_forward_hook(bias)
    try:
        first, second = encoder.encode([VLMRequest("hello"), VLMRequest("a photo of a red car")],
                                       SamplingOptions(max_new_tokens=12, stop_at_eos=True))
    finally:
        handle.remove()
    assert first.num_tokens == first.features.shape[0] == 4 and first.token_ids.tolist()[-1] == eos
    assert second.num_tokens == second.features.shape[0] == 12 and eos not in second.token_ids.tolist()


def test_the_papers_sampling_masks_the_end_token(encoder, eos_from_the_fourth_token):
    """vLLM min_tokens = max_tokens: the end token can never be sampled, however likely, and all 12 rows come."""
    for greedy in (True, False):
        (answer,) = encoder.encode([VLMRequest("hello")], SamplingOptions(max_new_tokens=12, greedy=greedy))
        assert answer.num_tokens == 12 and not set(answer.token_ids.tolist()) & set(encoder.eos_token_id)


def test_tensor_attributes_become_buffers_that_move_and_are_not_saved():
    module = torch.nn.Linear(2, 2)
    table = torch.arange(4.0)
    module.original_inv_freq = table  # as transformers 4.x's rotary embedding keeps it
    register_tensor_attributes(torch.nn.Sequential(module))
    assert dict(module.named_buffers())["original_inv_freq"].equal(table) and "original_inv_freq" not in module.state_dict()
    table += 1  # a copy of its own, as transformers 5.x registers it
    assert module.original_inv_freq.equal(torch.arange(4.0))
    assert module.to(torch.float16).original_inv_freq.dtype == torch.float16  # moved and cast with the module


@pytest.mark.parametrize("path", ["model.language_model.norm", "model.norm", "language_model.model.norm"])
def test_the_final_norm_is_found_in_each_transformers_layout(path):
    """5.x: model.language_model.norm; 4.5x: model.norm; older wrappers: language_model.model.norm."""
    root = torch.nn.Module()
    parent = root
    for name in path.split(".")[:-1]:
        parent.add_module(name, torch.nn.Module())
        parent = getattr(parent, name)
    norm = torch.nn.LayerNorm(2)
    parent.add_module("norm", norm)
    assert final_norm(root) is norm


def test_a_model_without_a_final_norm_is_named():
    with pytest.raises(ThinkDiffError) as refused:
        final_norm(torch.nn.Linear(2, 2))
    assert str(refused.value) == "cannot find the final norm of Linear; is it a Qwen2-VL model?"


def test_the_capture_ends_with_its_context():
    layer = torch.nn.Identity()
    with capture_last_position(layer) as rows:
        layer(torch.arange(6.0).reshape(1, 3, 2))
    layer(torch.zeros(1, 3, 2))
    assert len(rows) == 1 and rows[0].equal(torch.tensor([[4.0, 5.0]]))


def test_end_and_pad_ids_fall_back_to_the_models_config_then_the_tokenizer_then_the_end_token(tiny_vlm_folder):
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_vlm_folder)
    processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=None))
    model.generation_config = GenerationConfig()  # a folder's generation_config.json without the ids
    model.config.eos_token_id = None  # transformers 5.x keeps the end token in the text part only (4.x: one config)
    model.config.get_text_config().eos_token_id = 151645
    encoder = QwenVLEncoder(model, processor)
    assert encoder.eos_token_id == 151645 and encoder.pad_token_id == 151645
    model.generation_config = GenerationConfig(eos_token_id=[7, 8])
    processor.tokenizer.pad_token_id = 3
    assert (QwenVLEncoder(model, processor).eos_token_id, QwenVLEncoder(model, processor).pad_token_id) == ([7, 8], 3)
    model.generation_config = GenerationConfig(eos_token_id=[7, 8], pad_token_id=5, bos_token_id=9, top_k=1)
    assert QwenVLEncoder(model, processor).pad_token_id == 5  # the folder's own first
    kept = model.generation_config  # the ids only: the folder's sampling defaults are dropped
    assert (kept.eos_token_id, kept.pad_token_id, kept.bos_token_id, kept.top_k) == ([7, 8], 5, 9, GenerationConfig().top_k)
    model.generation_config = GenerationConfig(eos_token_id=[7, 8])
    processor.tokenizer.pad_token_id = None
    assert QwenVLEncoder(model, processor).pad_token_id == 7
    text = getattr(model.config, "text_config", model.config)  # transformers 4.5x: the top level
    assert (QwenVLEncoder(model, processor).hidden_size, QwenVLEncoder(model, processor).context_length) == (
        text.hidden_size, text.max_position_embeddings)


def test_the_encoder_infers_names_its_folder_and_format_and_decodes_without_special_tokens(tiny_vlm_folder, qwen_tokenizer):
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_vlm_folder).train()
    encoder = QwenVLEncoder(model, SimpleNamespace(tokenizer=qwen_tokenizer))
    assert not encoder.model.training and (encoder.name, encoder.weights) == ("", "default")
    with pytest.raises(ThinkDiffError, match="but the model reads at most"):  # no name: "the model"
        encoder._check_context({"input_ids": torch.zeros(1, 10**6, dtype=torch.long)}, 1, 100)
    ids = torch.tensor(qwen_tokenizer("hello world")["input_ids"] + [qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")])
    assert encoder.decode(ids) == "hello world" and encoder.decode(ids, skip_special_tokens=False) == "hello world<|im_end|>"


def test_the_loaded_encoder_is_named_after_its_folder(encoder, tiny_vlm_folder):
    assert (encoder.name, encoder.weights) == (tiny_vlm_folder.name, "default")


def test_a_tokenizer_that_does_not_know_the_image_token_names_its_folder(tmp_path):
    tokenizer = SimpleNamespace(convert_tokens_to_ids=lambda token: 0)  # an empty tokenizer knows no token
    with pytest.raises(ThinkDiffError) as refused:
        vlm._check_tokenizer(tokenizer, SimpleNamespace(image_token_id=151655), tmp_path)
    assert str(refused.value).startswith(f"the tokenizer in {tmp_path} does not know Qwen2-VL's image token: tokenizer files are "
                                         "missing (tokenizer.json, tokenizer_config.json). Download the complete folder from ")


def test_a_tokenizer_in_vocab_and_merges_files_is_enough(tmp_path, tiny_vlm_folder):
    folder = tmp_path / "slow-tokenizer"
    shutil.copytree(tiny_vlm_folder, folder)
    bpe = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]  # the same BPE, as the slow files
    (folder / "vocab.json").write_text(json.dumps(bpe["vocab"]), encoding="utf-8")
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in bpe["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer.json").unlink()
    encoder = QwenVLEncoder.from_folder(folder, dtype=torch.float32)
    assert encoder.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == encoder.model.config.image_token_id


def test_the_stop_hook_reports_each_step_and_never_stops():
    calls = []
    hook = vlm._EveryToken(prompt_length=3, total=8, callback=lambda step, total, ids: calls.append((step, total, ids.tolist())))
    flags = hook(torch.tensor([[1, 2, 3, 40, 41], [4, 5, 6, 50, 51]]), torch.zeros(2, 9))
    assert flags.dtype == torch.bool and flags.tolist() == [False, False]
    assert calls == [(2, 8, [[40, 41], [50, 51]])]


def test_picture_labels_and_the_pixel_budget_reach_the_prompt(encoder, two_images):
    labelled = encoder.prepare([VLMRequest("compare", two_images, picture_labels="on")], max_pixels=28 * 28 * 4)
    plain = encoder.prepare([VLMRequest("compare", two_images, picture_labels="off")], max_pixels=28 * 28 * 4)
    expected = encoder.processor(text=[render_chat(encoder.processor.tokenizer, "compare", 2, "on")],
                                 images=fit_to_pixel_budget(two_images, REFERENCE_MIN_PIXELS, 28 * 28 * 4), return_tensors="pt")
    assert torch.equal(labelled["input_ids"], expected["input_ids"]) and labelled["input_ids"].shape[1] > plain["input_ids"].shape[1]
    assert int(labelled["image_grid_thw"].prod(dim=1).sum()) <= 2 * 4 * 4  # at most 4 merged tokens (16 patches) each


def test_a_config_is_read_as_utf_8_whatever_the_locale(tmp_path):
    """(Also read here, so that mutation testing runs this test on the reader.)"""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "note": "modèle"}, ensure_ascii=False),
                                          encoding="utf-8")
    assert vlm._read_config(tmp_path)["note"] == "modèle"
    code = ("import sys; from pathlib import Path; from thinkdiff.vlm import _read_config; "
            "print(ascii(_read_config(Path(sys.argv[1]))['note']))")
    assert python_in_ascii_locale(code, str(tmp_path)).strip() == ascii("modèle")


@pytest.mark.parametrize(("weights", "layer", "compute"), [("bnb_8bit", "Linear8bitLt", torch.float32),
                                                           ("bnb_nf4", "Linear4bit", torch.bfloat16)])
def test_a_bitsandbytes_format_loads_its_quantized_layers_on_the_cpu(tiny_vlm_folder, weights, layer, compute):
    if not BITSANDBYTES_ON_CPU:
        pytest.skip("transformers 4.x runs bitsandbytes on GPUs only")
    encoder = QwenVLEncoder.from_folder(tiny_vlm_folder, dtype=compute, weights=weights)
    kinds = {type(module).__name__ for module in encoder.model.modules()}
    assert layer in kinds and encoder.weights == weights and encoder.model.dtype == compute
    quantization = encoder.model.config.quantization_config
    assert (quantization.load_in_8bit, quantization.load_in_4bit) == (weights == "bnb_8bit", weights == "bnb_nf4")
    assert {p.device.type for p in encoder.model.parameters()} == {"cpu"}
    if weights == "bnb_nf4":  # computes in the precision asked for
        assert {m.compute_dtype for m in encoder.model.modules() if type(m).__name__ == "Linear4bit"} == {compute}


def test_the_precision_attention_and_format_asked_for_are_the_ones_loaded(tiny_vlm_folder):
    encoder = QwenVLEncoder.from_folder(tiny_vlm_folder, dtype=torch.bfloat16, attn_implementation="eager", weights="fp8_e4m3fn")
    assert encoder.model.config._attn_implementation == "eager" and encoder.weights == "fp8_e4m3fn"
    assert encoder.model.lm_head.weight.dtype == torch.float8_e4m3fn  # stored in fp8
    assert {p.dtype for name, p in encoder.model.named_parameters() if "norm" in name} == {torch.bfloat16}  # the rest: bf16


def test_a_config_whose_image_token_the_tokenizer_does_not_know_names_the_folder(tmp_path, tiny_vlm_folder):
    folder = tmp_path / "mismatched"
    shutil.copytree(tiny_vlm_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["image_token_id"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ThinkDiffError, match=rf"^the tokenizer in {folder} does not know Qwen2-VL's image token"):
        QwenVLEncoder.from_folder(folder, dtype=torch.float32)
