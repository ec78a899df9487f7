"""The top-p sampler is exact: the bucket shortcut keeps the same tokens as ranking the whole vocabulary, that ranking is
top-p's definition (checked in exact rationals and against transformers' warper), and the draw follows the kept masses."""

import math
from fractions import Fraction

import pytest
import torch
from transformers import GenerationConfig, TopPLogitsWarper

from thinkdiff import sampling
from thinkdiff.errors import ThinkDiffError
from thinkdiff.sampling import BUCKETS, FiniteLogits, TopPSampler, draw, fixed_point_masses, logit_buckets, top_p_mask
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder, VLMRequest, final_norm

VOCAB = 151936


def both(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    masses = fixed_point_masses(logits)
    return top_p_mask(logits, masses, top_p), top_p_mask(logits, masses, top_p, full_sort=True)


def definition(logits: torch.Tensor, top_p: float) -> list[bool]:
    """Top-p of one row in exact rationals over the fixed-point masses: rank by (logit, id) descending, keep a token
    when the mass ranked above it is below top_p of the total (the first is always kept)."""
    masses = fixed_point_masses(logits[None])[0].tolist()
    values = logits.tolist()
    order = sorted(range(len(values)), key=lambda i: (values[i], i), reverse=True)
    total, above, keep = sum(masses), 0, [False] * len(values)
    for rank, token in enumerate(order):
        keep[token] = rank == 0 or Fraction(above) < Fraction(top_p) * total
        above += masses[token]
    return keep


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("scale", [0.3, 1.3, 3.0, 8.0, 30.0])  # flat (random models) .. peaked (a real model at T 0.6)
@pytest.mark.parametrize("top_p", [0.9, 0.5, 0.999])
def test_buckets_keep_what_the_full_sort_keeps(scale, top_p):
    logits = torch.randn(6, VOCAB, generator=generator()) * scale
    fast, reference = both(logits, top_p)
    assert torch.equal(fast, reference)
    assert reference.any(-1).all()


TIES = {
    "bf16 logits (many exact ties)": lambda: (torch.randn(4, VOCAB, generator=generator(1)) * 2).bfloat16().float(),
    "integer logits": lambda: torch.randint(-8, 3, (4, VOCAB), generator=generator(2)).float(),
    "all equal": lambda: torch.zeros(2, VOCAB),
    "one outlier far above": lambda: torch.cat([torch.full((2, 1), 50.0), torch.randn(2, VOCAB - 1, generator=generator(3))], 1),
    "masked tokens (-inf)": lambda: torch.randn(3, VOCAB, generator=generator(4)).index_fill_(1, torch.arange(0, VOCAB, 3), -torch.inf),
    "below the mass range": lambda: torch.cat([torch.zeros(2, 5), torch.full((2, VOCAB - 5), -40.0)], 1),
}


@pytest.mark.parametrize("name", list(TIES))
@pytest.mark.parametrize("top_p", [0.9, 0.3, 1.0, 1e-9])
def test_ties_and_edge_cases(name, top_p):
    logits = TIES[name]()
    fast, reference = both(logits, top_p)
    assert torch.equal(fast, reference)


@pytest.mark.parametrize("case", [
    [1.0, 1.0, 1.0, 1.0],  # a tie across the boundary: the higher ids rank first
    [2.0, 0.0, 2.0, 1.0, 0.0, 2.0, -1.0],
    [0.0] * 10,
    [5.0, -float("inf"), 5.0, 4.0],
])
@pytest.mark.parametrize("top_p", [0.25, 0.5, 0.6, 0.75, 0.999, 1.0])
def test_the_reference_is_top_p_in_exact_arithmetic(case, top_p):
    logits = torch.tensor(case)
    assert top_p_mask(logits[None], fixed_point_masses(logits[None]), top_p, full_sort=True)[0].tolist() == definition(logits, top_p)
    assert top_p_mask(logits[None], fixed_point_masses(logits[None]), top_p)[0].tolist() == definition(logits, top_p)


def test_random_small_vocabularies_match_the_definition():
    gen = generator(5)
    for _ in range(200):
        size = int(torch.randint(1, 40, (), generator=gen))
        logits = torch.randint(-6, 6, (size,), generator=gen).float() * float(torch.rand((), generator=gen) * 3)
        top_p = float(torch.rand((), generator=gen))
        fast, reference = both(logits[None], top_p)
        assert fast[0].tolist() == reference[0].tolist() == definition(logits, top_p)


@pytest.mark.parametrize("scale", [0.5, 2.0, 6.0, 20.0])
def test_same_kept_set_as_transformers_top_p(scale):
    """transformers sorts float32 probabilities; with continuous logits (no ties) its kept set is the same."""
    logits = torch.randn(8, VOCAB, generator=generator(6)) * scale
    kept_by_transformers = TopPLogitsWarper(0.9)(None, logits) > -torch.inf
    assert torch.equal(both(logits, 0.9)[0], kept_by_transformers)


def test_the_draw_is_inverse_cdf_over_the_kept_masses_in_id_order(monkeypatch):
    """Token i gets the uniforms u with cdf[i-1] <= u * total / 2**53 < cdf[i]: its mass's share to within 2**-53."""
    masses = torch.tensor([[5, 0, 7, 3, 9, 1]]) << 40
    keep = torch.tensor([[True, True, True, False, True, False]])
    cdf = (masses * keep).cumsum(-1)[0].tolist()
    total = cdf[-1]
    uniforms: list[int] = []

    def randint(low, high, size, device=None):  # the draw asks for 53-bit uniforms: all of [0, 2**53)
        assert (low, high, size) == (0, 2**53, (1,))
        return torch.tensor(uniforms[-1:], device=device)

    monkeypatch.setattr(sampling.torch, "randint", randint)
    drawn = {}
    for token, (low, high) in enumerate(zip([0, *cdf[:-1]], cdf, strict=True)):
        if low < high:  # tokens without kept mass are never drawn
            first, last = -(-low * 2**53 // total), -(-high * 2**53 // total) - 1  # the smallest and largest u of token i
            uniforms.append(first)
            drawn[token, "first"] = int(draw(masses, keep)[0])
            uniforms.append(last)
            drawn[token, "last"] = int(draw(masses, keep)[0])
    assert drawn == {(token, end): token for token in (0, 2, 4) for end in ("first", "last")}


def test_the_draw_frequencies_follow_the_masses():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).repeat(20000, 1)
    masses = fixed_point_masses(logits)
    keep = top_p_mask(logits, masses, 0.9)
    counts = torch.bincount(draw(masses, keep), minlength=6).double()
    expected = (masses[0] * keep[0]).double() / (masses[0] * keep[0]).sum() * len(logits)
    assert counts[~keep[0]].sum() == 0
    chi_square = float((((counts - expected) ** 2) / expected.clamp_min(1e-9))[keep[0]].sum())
    assert chi_square < 20.5  # 99.9 % quantile of chi-square with 4 degrees of freedom (5 kept tokens)


@pytest.mark.parametrize("vocab", [1024, 1025])
def test_masses_use_every_bit_a_row_can_hold(vocab):
    """A row of equal logits (the largest total) sums to at most 2**62, and one more bit of scale would pass it:
    at a power of two and one above it."""
    total = int(fixed_point_masses(torch.zeros(1, vocab)).sum())
    assert total <= 2**62 < 2 * total


def test_each_rows_masses_are_its_own():
    """A row far below another gets the masses it gets alone (its own maximum, not the batch's)."""
    logits = torch.randn(2, 50, generator=generator(3))
    logits[1] -= 200
    assert torch.equal(fixed_point_masses(logits)[1], fixed_point_masses(logits[1:])[0])


@pytest.mark.parametrize("full_sort", [False, True])
def test_top_p_one_keeps_every_token_with_mass(full_sort):
    """Even a token of mass 1 (alone in the lowest bucket, with a token of mass 0); the mass-0 token is never kept."""
    logits = torch.tensor([[0.0, math.log(1.5) - 60 * math.log(2), -1000.0]])  # 3 tokens: masses of 2**60 scale
    masses = fixed_point_masses(logits)
    assert masses[0].tolist() == [2**60, 1, 0]
    assert top_p_mask(logits, masses, 1.0, full_sort)[0].tolist() == [True, True, False]


def test_the_last_token_of_the_vocabulary_is_drawn_too():
    torch.manual_seed(0)
    logits = torch.zeros(100, 2)
    masses = fixed_point_masses(logits)
    assert set(draw(masses, top_p_mask(logits, masses, 1.0)).tolist()) == {0, 1}  # fails with odds 2**-99


def test_end_tokens_are_masked_for_min_new_tokens():
    scores = torch.zeros(4, 50)
    scores[:, 7] = 30.0  # an end token the model strongly wants
    sampler = TopPSampler(1.0, 0.9, prompt_length=3, min_new_tokens=1, eos_token_ids=[7, 9])
    first = sampler(torch.zeros(4, 3, dtype=torch.long), scores).argmax(-1)
    later = sampler(torch.zeros(4, 4, dtype=torch.long), scores).argmax(-1)
    assert not torch.isin(first, torch.tensor([7, 9])).any() and (later == 7).all()


def test_buckets_are_monotone_in_the_logit():
    """Whole buckets rank above or below each other only if the bucket map never inverts two logits."""
    logits = torch.sort(torch.randn(3, VOCAB, generator=generator(7)) * 4).values
    logits[:, :5] = -torch.inf
    buckets = logit_buckets(logits)
    assert (buckets.diff(dim=-1) >= 0).all() and buckets.min() == 0 and buckets.max() == BUCKETS - 1


@pytest.mark.parametrize("stop_at_eos", [False, True])
def test_seeded_generation_is_identical_with_the_full_sort(encoder, stop_at_eos):
    """The shortcut changes nothing but speed: same seed, same tokens, same features as ranking the whole vocabulary."""
    requests = [VLMRequest("Describe a tabby cat."), VLMRequest("a photo of a red car on a bridge at night")]
    options = SamplingOptions(max_new_tokens=24, temperature=1.0, stop_at_eos=stop_at_eos, seed=3)
    inputs = encoder.prepare(requests)
    fast = encoder.generate(inputs, options)
    kwargs = options.generate_kwargs(encoder.eos_token_id, encoder.pad_token_id, inputs["input_ids"].shape[1])
    kwargs["logits_processor"][0].full_sort = True
    with torch.random.fork_rng():
        torch.manual_seed(options.seed)
        sequences = encoder.model.generate(**inputs, **kwargs)
    for answer, sequence in zip(fast, sequences, strict=True):
        reference = sequence[inputs["input_ids"].shape[1]:][: answer.num_tokens]
        assert torch.equal(answer.token_ids, reference)
    assert len({tuple(a.token_ids.tolist()) for a in fast}) == 2


def test_greedy_stays_transformers_own():
    """transformers' greedy search, with only the non-finite-logits check added."""
    kwargs = SamplingOptions(greedy=True).generate_kwargs([1, 2], 0, prompt_length=5)
    assert set(kwargs) == {"generation_config", "logits_processor"} and not kwargs["generation_config"].do_sample
    assert [type(p) for p in kwargs["logits_processor"]] == [FiniteLogits]




def softmax_top_p(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The reference distribution, independently of the sampler: softmax(logits / T) in float64, the tokens ranked by
    probability, a token kept while the probability ranked above it is below top_p, renormalised."""
    probabilities = torch.softmax(logits.double() / temperature, -1)
    ranked, order = probabilities.sort(descending=True)
    above = ranked.cumsum(-1) - ranked
    assert (above - top_p).abs().min() > 1e-6  # the kept set is unambiguous at this precision
    kept = torch.zeros_like(probabilities).scatter_(-1, order, (above < top_p).double())
    return probabilities * kept / (probabilities * kept).sum()


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 0.9), (1.7, 0.9), (0.7, 0.75), (1.7, 0.75)])
def test_the_sampler_draws_from_softmax_at_the_temperature_truncated_by_top_p(monkeypatch, temperature, top_p):
    """The sampler that SamplingOptions builds, fed evenly spread uniforms (one per row of a batch of equal rows): each
    token's share of the rows is its probability to within 1 / rows, so the whole distribution is compared, without
    sampling noise, against the float64 reference. T != 1 and top-p < 1 make a skipped or misplaced division visible."""
    rows = 10000
    logits = torch.randn(1, 40, generator=generator(11)) * 2
    spread = [((2 * i + 1) * 2**53) // (2 * rows) for i in range(rows)]
    monkeypatch.setattr(sampling.torch, "randint", lambda low, high, size, device=None: torch.tensor(spread, device=device))
    options = SamplingOptions(temperature=temperature, top_p=top_p)
    (sampler,) = options.generate_kwargs([39], 0, prompt_length=2)["logits_processor"]
    drawn = sampler(torch.zeros(rows, 3, dtype=torch.long), logits.repeat(rows, 1)).argmax(-1)
    shares = torch.bincount(drawn, minlength=40).double() / rows
    reference = softmax_top_p(logits[0], temperature, top_p)
    assert torch.allclose(shares, reference, atol=2.0 / rows, rtol=0), (shares - reference).abs().max()
    assert int((reference > 0).sum()) < 40  # top-p dropped some tokens


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_logits_are_refused_with_the_dtype_fix(bad):
    """A NaN row would otherwise draw index vocab_size (a CUDA device-side assert that breaks the whole process)."""
    scores = torch.zeros(2, VOCAB)
    scores[1, 7] = bad
    sampler = TopPSampler(0.7, 0.9, prompt_length=1, min_new_tokens=0, eos_token_ids=[0])
    for process in (sampler, FiniteLogits()):
        with pytest.raises(ThinkDiffError, match="NaN or infinite.*dtype to fp32"):
            process(torch.zeros(2, 1, dtype=torch.long), scores.clone())
    scores[1, 7] = -math.inf  # a masked token is fine
    assert FiniteLogits()(torch.zeros(2, 1, dtype=torch.long), scores) is scores


@pytest.mark.parametrize("greedy", [True, False])
def test_an_overflowing_vlm_gives_the_error_and_the_next_prompt_runs(tiny_vlm_folder, greedy):
    encoder = QwenVLEncoder.from_folder(tiny_vlm_folder, dtype=torch.float32)
    options, request = SamplingOptions(max_new_tokens=3, greedy=greedy), [VLMRequest("a red car")]
    (reference,) = encoder.encode(request, options)
    norm = final_norm(encoder.model)
    saved = norm.weight.detach().clone()
    with torch.no_grad():
        norm.weight[0] = math.inf  # as an fp16 overflow leaves it
    with pytest.raises(ThinkDiffError, match="NaN or infinite"):
        encoder.encode(request, options)
    with torch.no_grad():
        norm.weight.copy_(saved)
    (again,) = encoder.encode(request, options)
    assert torch.equal(again.token_ids, reference.token_ids)


def test_the_generate_arguments_hand_the_draw_to_the_sampler_alone():
    """transformers then decodes greedily over the sampler's output: none of its own warpers, no minimum-length
    processor (the sampler masks the end tokens itself), and the token ids asked for."""
    options = SamplingOptions(temperature=0.7, top_p=0.8, max_new_tokens=5)
    kwargs = options.generate_kwargs(eos_token_id=[2, 3], pad_token_id=1, prompt_length=11)
    config, (sampler,) = kwargs["generation_config"], kwargs["logits_processor"]
    assert isinstance(sampler, TopPSampler)
    assert (sampler.temperature, sampler.top_p, sampler.prompt_length, sampler.min_new_tokens, sampler.eos_token_ids) == (
        0.7, 0.8, 11, 5, [2, 3])
    assert (config.do_sample, config.temperature, config.top_p, config.top_k, config.min_new_tokens) == (False, None, None, None, None)
    assert (config.eos_token_id, config.pad_token_id, config.max_new_tokens) == ([2, 3], 1, 5)
    assert options.generate_kwargs(eos_token_id=7, pad_token_id=1, prompt_length=11)["logits_processor"][0].eos_token_ids == [7]


def test_greedy_decoding_carries_no_sampling_settings():
    config = SamplingOptions(greedy=True, temperature=0.3, top_p=0.5).generation_config(eos_token_id=2, pad_token_id=1)
    plain = GenerationConfig()
    assert not config.do_sample and (config.temperature, config.top_p, config.top_k) == (plain.temperature, plain.top_p, plain.top_k)


@pytest.mark.parametrize("top_p", [1.0, 0.01])
def test_top_p_up_to_one_is_sampling(top_p):
    assert SamplingOptions(top_p=top_p).generation_config(eos_token_id=2, pad_token_id=1).top_p == top_p


@pytest.mark.parametrize(("temperature", "top_p"), [(0.0, 0.9), (-1.0, 0.9), (0.6, 0.0), (0.6, 1.01)])
def test_other_sampling_settings_are_refused_naming_greedy(temperature, top_p):
    with pytest.raises(ThinkDiffError) as refused:
        SamplingOptions(temperature=temperature, top_p=top_p).generation_config(eos_token_id=2, pad_token_id=1)
    assert str(refused.value) == (f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {temperature}, {top_p}); "
                                  "switch greedy on for deterministic decoding")
