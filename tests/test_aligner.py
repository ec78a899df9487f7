"""The aligner's maths against an independent formula, and widths taken from the weights."""

import math

import pytest
import torch
from transformers.models.t5.modeling_t5 import T5LayerNorm

from tests.support.tiny_models import random_aligner
from thinkdiff.aligner import Aligner, T5RMSNorm


def reference_aligner(x: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Linear -> exact (erf) GELU -> Linear -> T5 RMSNorm (eps 1e-6), written out by hand in float64."""
    x = x.double()
    h = x @ state["in_proj.weight"].double().T + state["in_proj.bias"].double()
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
    y = h @ state["out_proj.weight"].double().T + state["out_proj.bias"].double()
    y = y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6)
    return y * state["norm.weight"].double()


def test_aligner_matches_the_formula():
    aligner = random_aligner(in_dim=48, hidden_dim=96, out_dim=40, seed=3)
    x = torch.randn(2, 7, 48) * 3
    expected = reference_aligner(x, aligner.state_dict())
    torch.testing.assert_close(aligner(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_norm_matches_transformers_t5_layer_norm(dtype):
    ours, theirs = T5RMSNorm(32), T5LayerNorm(32, eps=1e-6)
    weight = torch.rand(32) + 0.5
    ours.weight.data.copy_(weight)
    theirs.weight.data.copy_(weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = (torch.randn(3, 5, 32) * 10).to(dtype)
    out = ours(x)
    assert out.dtype == theirs(x).dtype
    torch.testing.assert_close(out, theirs(x))


def test_widths_come_from_the_weights():
    state = random_aligner(in_dim=24, hidden_dim=16, out_dim=8).state_dict()
    aligner = Aligner.from_state_dict(state)
    assert (aligner.in_dim, aligner.in_proj.out_features, aligner.out_dim) == (24, 16, 8)
    assert aligner(torch.randn(5, 24)).shape == (5, 8)


@pytest.mark.parametrize(("in_dim", "params"), [(3584, 31_469_568), (1408, 22_556_672)])
def test_release_sizes(in_dim, params):
    with torch.device("meta"):
        aligner = Aligner(in_dim, 4096, 4096)
    assert sum(p.numel() for p in aligner.parameters()) == params


def test_the_norm_epsilon_is_t5s_1e_6_where_it_matters():
    """Outputs of a few thousandths: the mean square (~1e-6) is of the order of eps, so 1e-5 would be off by a factor ~2."""
    norm = T5RMSNorm(64)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 1e-3
    expected = x.double() / torch.sqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x).double(), expected, rtol=1e-5, atol=1e-9)


def test_from_state_dict_builds_in_the_weights_dtype_with_the_given_layers_and_loads_strictly():
    state = {k: v.to(torch.bfloat16) for k, v in random_aligner(12, 20, 8, seed=3).state_dict().items()}

    class Linear(torch.nn.Linear):
        pass

    aligner = Aligner.from_state_dict(state, operations=type("Ops", (), {"Linear": Linear}))
    assert {p.dtype for p in aligner.parameters()} == {torch.bfloat16}
    assert type(aligner.in_proj) is Linear and type(aligner.out_proj) is Linear
    with pytest.raises(RuntimeError, match="Unexpected key"):
        Aligner.from_state_dict({**state, "extra.weight": torch.zeros(1)})
