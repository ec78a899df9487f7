"""The VLM's weight formats in the library: fp8 storage computed in the working precision, bitsandbytes as an option."""

import re
import sys

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from tests.support.trained_like import trained_like_matrix
from tests.support.vlm_states import prefill_states
from thinkdiff import weight_formats
from thinkdiff.errors import ThinkDiffError
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder, VLMRequest
from thinkdiff.weight_formats import (
    CastLinear,
    bitsandbytes_config,
    fp8_with_scale,
    store_linears_fp8,
    stored_bytes,
)


def test_cast_linear_computes_in_the_inputs_precision():
    linear = nn.Linear(16, 8)
    cast = CastLinear(16, 8)
    stored, scale = fp8_with_scale(linear.weight)
    cast.weight, cast.weight_scale = nn.Parameter(stored, requires_grad=False), nn.Parameter(scale, requires_grad=False)
    cast.bias = linear.bias
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    out = cast(x)
    assert out.dtype == torch.bfloat16
    dequantized = (linear.weight.detach() / scale).to(torch.float8_e4m3fn).to(torch.bfloat16) * scale.to(torch.bfloat16)
    torch.testing.assert_close(out, F.linear(x, dequantized, linear.bias.to(torch.bfloat16)))


@pytest.mark.parametrize("bias", [True, False])
def test_cast_linear_computes_on_the_inputs_device(bias):
    """Weight, scale and bias follow the input (``meta`` stands in for the GPU a streamed layer computes on)."""
    cast = CastLinear(16, 8, bias=bias)
    stored, scale = fp8_with_scale(cast.weight)
    cast.weight, cast.weight_scale = nn.Parameter(stored, requires_grad=False), nn.Parameter(scale, requires_grad=False)
    out = cast(torch.randn(3, 16, dtype=torch.bfloat16, device="meta"))
    assert (out.device.type, out.dtype, out.shape) == ("meta", torch.bfloat16, (3, 8))


def test_fp8_scales_per_row_per_tensor_or_none():
    """The default is one scale per output row; a zero row stays zero (its scale is clamped above 0)."""
    weight = torch.randn(6, 10) * torch.arange(1, 7).reshape(6, 1)
    weight[2] = 0
    expected = {"channel": weight.abs().amax(dim=1, keepdim=True) / 448, "tensor": weight.abs().amax().reshape(1, 1) / 448,
                "none": torch.ones(1, 1)}
    expected["channel"][2] = torch.finfo(torch.float32).tiny / 448
    for scaling, scale in [("channel", fp8_with_scale(weight)[1]), *((s, fp8_with_scale(weight, s)[1]) for s in expected)]:
        assert scale.shape == expected[scaling].shape and torch.equal(scale, expected[scaling]), scaling
        stored = fp8_with_scale(weight, scaling)[0]
        assert stored.dtype == torch.float8_e4m3fn and torch.equal(stored, (weight / scale).to(torch.float8_e4m3fn))
        assert torch.equal(stored[2].float(), torch.zeros(10))


class TinyLM(nn.Module):
    """The module layout fp8 storage looks at: embeddings, a vision tower, nested language-model Linears, a head."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 8)
        self.visual = nn.Sequential(nn.Linear(8, 8))
        self.model = nn.ModuleDict({"layers": nn.ModuleList([nn.ModuleDict({"q": nn.Linear(8, 4), "o": nn.Linear(4, 8,
                                                                                                             bias=False)})])})
        self.lm_head = nn.Linear(8, 12, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed


@pytest.mark.parametrize("tied", [False, True])
def test_fp8_storage_replaces_the_nested_linears_in_place(tied):
    """A fast counterpart of the tiny VLM's test below: the count, the names, frozen fp8 weights and scales beside them."""
    model = TinyLM(tied)
    originals = {name: module.weight.detach().clone() for name, module in model.named_modules() if type(module) is nn.Linear}
    q_bias = model.model["layers"][0]["q"].bias
    assert store_linears_fp8(model) == (2 if tied else 3)
    cast = {name for name, module in model.named_modules() if isinstance(module, CastLinear)}
    assert cast == {"model.layers.0.q", "model.layers.0.o"} | (set() if tied else {"lm_head"})
    assert type(model.visual[0]) is nn.Linear and (model.lm_head.weight is model.embed.weight) is tied
    for name in cast:
        module = model.get_submodule(name)
        scale = originals[name].abs().amax(dim=1, keepdim=True) / 448
        assert torch.equal(module.weight, (originals[name] / scale).to(torch.float8_e4m3fn))
        assert torch.equal(module.weight_scale, scale)
        assert not module.weight.requires_grad and not module.weight_scale.requires_grad
    assert model.model["layers"][0]["q"].bias is q_bias and model.model["layers"][0]["o"].bias is None


def test_fp8_scales_are_made_on_the_weights_device():
    """Every scale is made where its weight is (``meta`` stands in for a GPU); unscaled storage's scale of one was made
    on the CPU, and dividing a GPU weight by it failed."""
    for scaling in ("channel", "tensor", "none"):
        model = TinyLM(tied=False).to("meta")
        store_linears_fp8(model, scaling)
        for name in ("lm_head", "model.layers.0.q"):
            module = model.get_submodule(name)
            assert (module.weight.device.type, module.weight_scale.device.type) == ("meta", "meta"), (scaling, name)
            rows = module.out_features if scaling == "channel" else 1
            assert module.weight_scale.shape == (rows, 1), (scaling, name)  # the scaling asked for


@pytest.mark.parametrize("compute_dtype", [torch.bfloat16, torch.float16])
def test_bitsandbytes_configs(compute_dtype):
    pytest.importorskip("bitsandbytes")
    nf4 = bitsandbytes_config("bnb_nf4", compute_dtype)
    assert (nf4.load_in_4bit, nf4.load_in_8bit, nf4.bnb_4bit_quant_type, nf4.bnb_4bit_compute_dtype,
            nf4.llm_int8_skip_modules) == (True, False, "nf4", compute_dtype, ["lm_head"])
    int8 = bitsandbytes_config("bnb_8bit", compute_dtype)
    assert (int8.load_in_8bit, int8.load_in_4bit, int8.llm_int8_skip_modules) == (True, False, ["lm_head"])


@pytest.mark.parametrize("tied", [False, True])
def test_fp8_stores_the_language_models_linears_only(tiny_vlm_folder, tied_vlm_folder, tied):
    """2 layers x (q, k, v, o, gate, up, down), and lm_head unless it is the embedding table (tied): that stays one tensor."""
    encoder = QwenVLEncoder.from_folder(tied_vlm_folder if tied else tiny_vlm_folder, dtype=torch.float32)
    model = encoder.model
    embeddings = model.get_input_embeddings().weight.detach().clone()
    originals = {name: module.weight.detach().clone() for name, module in model.named_modules() if type(module) is nn.Linear}
    biases = {name: module.bias.detach().clone() for name, module in model.named_modules()
              if type(module) is nn.Linear and module.bias is not None}
    replaced = store_linears_fp8(model)
    modules = dict(model.named_modules())
    cast = sorted(name for name in originals if isinstance(modules[name], CastLinear))
    assert replaced == len(cast) == (14 if tied else 15)
    assert all(".visual." not in f".{name}." for name in cast) and ("lm_head" in cast) is not tied
    for name in cast:
        assert modules[name].weight.dtype == torch.float8_e4m3fn
        scale = originals[name].abs().amax(dim=1, keepdim=True) / 448  # per output channel: the largest weight -> 448
        torch.testing.assert_close(modules[name].weight_scale, scale)
        assert torch.equal(modules[name].weight, (originals[name] / scale).to(torch.float8_e4m3fn))
        if name in biases:  # q, k, v keep their (non-zero) biases in full precision
            assert torch.equal(modules[name].bias, biases[name]) and biases[name].abs().min() > 0
    assert len([name for name in cast if name in biases]) == 6
    assert (model.lm_head.weight is model.get_input_embeddings().weight) is tied
    assert torch.equal(model.get_input_embeddings().weight, embeddings)


@pytest.mark.parametrize("tied", [False, True])
def test_the_fp8_encoder_answers_like_the_full_precision_one(tiny_vlm_folder, tied_vlm_folder, tied):
    """Its features are those of the full-precision model on its own answer (one forward over prompt + answer). With the
    head tied (not stored in fp8) the greedy answer is the same too; an fp8 head may flip a near tie of the random
    model's logits (its 151,936 rows of std 0.02 leave top-2 gaps below fp8's rounding)."""
    folder = tied_vlm_folder if tied else tiny_vlm_folder
    fp8, full = (QwenVLEncoder.from_folder(folder, dtype=torch.float32, weights=w) for w in ("fp8_e4m3fn", "default"))
    request, options = [VLMRequest("a photo of a red car")], SamplingOptions(max_new_tokens=8, greedy=True)
    (ours,), (reference,) = fp8.encode(request, options), full.encode(request, options)
    expected = prefill_states(full, full.prepare(request), ours.token_ids)[-9:-1]
    assert F.cosine_similarity(ours.features, expected, dim=-1).min() > 0.99
    if tied:
        assert torch.equal(ours.token_ids, reference.token_ids)


def test_bitsandbytes_formats_say_how_to_install_it_when_it_is_absent(tiny_vlm_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(ThinkDiffError, match=r"need the optional package bitsandbytes.*python -m pip install bitsandbytes.*fp8_e4m3fn"):
        QwenVLEncoder.from_folder(tiny_vlm_folder, dtype=torch.float32, weights="bnb_nf4")


@pytest.mark.parametrize("weights", ["default", "bnb_8bit"])
def test_a_device_bitsandbytes_cannot_use_names_the_format_that_works(tiny_vlm_folder, monkeypatch, weights):
    """transformers 4.x refuses bitsandbytes on a CPU without Intel's extension (a RuntimeError from its quantizer's
    environment check): for bitsandbytes formats that becomes the advice; other RuntimeErrors are not reworded."""
    model_class = transformers.Qwen2VLForConditionalGeneration

    def refuse(*args, **kwargs):
        raise RuntimeError("None of the available devices are supported by the bitsandbytes version you have installed.")

    monkeypatch.setattr(model_class, "from_pretrained", refuse)
    if weights == "default":
        with pytest.raises(RuntimeError, match="None of the available devices"):
            QwenVLEncoder.from_folder(tiny_vlm_folder, weights=weights)
        return
    with pytest.raises(ThinkDiffError, match=rf"weights bnb_8bit cannot run on this machine with transformers "
                                             rf"{re.escape(transformers.__version__)}: None of the available devices.*"
                                             r"Pick fp8_e4m3fn .*upgrade transformers"):
        QwenVLEncoder.from_folder(tiny_vlm_folder, weights=weights)


def test_an_unknown_format_is_refused(tiny_vlm_folder):
    with pytest.raises(ThinkDiffError, match="weights must be one of default, fp8_e4m3fn, bnb_8bit, bnb_nf4"):
        QwenVLEncoder.from_folder(tiny_vlm_folder, weights="int3")


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.03])
def test_scaled_fp8_keeps_e4m3s_precision_for_trained_like_weights(sigma):
    """With its per-row scale a weight matrix keeps e4m3fn's relative precision (its 3-bit mantissa: about 2 % RMS
    here) whatever its σ and outliers; stored unscaled, weights below 2**-6 fall into subnormals (step 2**-9): 3 % at
    σ 0.03, 6 % at σ 0.01, 11 % at σ 0.005 (Qwen2's matrices have σ of about 0.01 to 0.03)."""
    matrix = trained_like_matrix(256, 512, torch.Generator().manual_seed(0))
    weight = matrix / matrix.std() * sigma

    def error(scaling: str) -> float:
        stored, scale = fp8_with_scale(weight, scaling)
        return ((stored.float() * scale - weight).norm() / weight.norm()).item()

    assert error("channel") < 0.03
    assert error("none") > {0.005: 0.1, 0.01: 0.05, 0.03: 0.025}[sigma]


@pytest.mark.parametrize("compress_statistics", [True, False], ids=["nested_absmax", "float_absmax"])
@pytest.mark.parametrize(("in_features", "out_features"), [(256, 96), (193, 85)], ids=["whole_blocks", "odd_257_blocks"])
def test_an_nf4_weight_not_yet_quantized_is_sized_as_bitsandbytes_will_store_it(in_features, out_features,
                                                                                  compress_statistics):
    """bitsandbytes versions that quantize on the move to the GPU leave 4-bit layers unquantized after a CPU load:
    ComfyUI must be told the quantized size, or it sees the bf16 size and refuses the 8 GB cards NF4 is for. 193 x 85
    is odd and fills 257 blocks of 64 (one more than a nested absmax block of 256 takes)."""
    bnb = pytest.importorskip("bitsandbytes")
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=True, quant_type="nf4", compute_dtype=torch.bfloat16,
                              compress_statistics=compress_statistics)
    assert layer.weight.bnb_quantized is False
    accounted = stored_bytes(layer)
    layer = layer.to("cpu")  # bitsandbytes quantizes on this move
    assert layer.weight.bnb_quantized is True
    assert accounted == stored_bytes(layer) < in_features * out_features * 4 // 6


def test_a_model_of_nf4_layers_not_yet_quantized_is_sized_as_once_quantized():
    """Every such layer adds its quantized size (not only the last one)."""
    bnb = pytest.importorskip("bitsandbytes")
    model = nn.Sequential(*(bnb.nn.Linear4bit(128, 64, quant_type="nf4", compute_dtype=torch.bfloat16) for _ in range(3)))
    accounted = stored_bytes(model)
    model = model.to("cpu")
    assert all(layer.weight.bnb_quantized for layer in model)
    assert accounted == stored_bytes(model)


def test_bitsandbytes_layers_move_with_their_quantized_state_by_a_subclass_of_their_own(monkeypatch):
    """One subclass per bitsandbytes class, made on first use (here afresh, as in a new process), named as the original;
    other layers are left alone."""
    bnb = pytest.importorskip("bitsandbytes")
    monkeypatch.setattr(weight_formats, "_MOVING_CLASSES", {})
    model = nn.Sequential(bnb.nn.Linear8bitLt(64, 32, has_fp16_weights=False),
                          bnb.nn.Linear8bitLt(64, 32, has_fp16_weights=False), bnb.nn.Linear4bit(64, 32), nn.Linear(4, 4))
    weight_formats.keep_quantized_state_with_weights(model)
    int8, int8_again, nf4, plain = model
    assert type(int8) is type(int8_again) and type(int8).__mro__[1:3] == (weight_formats.QuantizedStateMoves, bnb.nn.Linear8bitLt)
    assert type(nf4).__mro__[1:3] == (weight_formats.QuantizedStateMoves, bnb.nn.Linear4bit)
    assert [(type(m).__name__, type(m).__module__) for m in (int8, nf4)] == [("Linear8bitLt", weight_formats.__name__),
                                                                            ("Linear4bit", weight_formats.__name__)]
    assert type(plain) is nn.Linear
