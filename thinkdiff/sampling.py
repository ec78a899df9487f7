"""Exact top-p sampling without sorting the vocabulary.

transformers' ``TopPLogitsWarper`` sorts every row of logits (152k entries for Qwen2) at every step, and its
``multinomial`` draws one exponential per vocabulary entry: with a small model on a CPU the two take most of the
generation time, and both grow with the batch. :class:`TopPSampler` draws from the same distribution without either.

Top-p as transformers and vLLM define it: rank the tokens by logit, keep a token when the probability mass ranked
strictly above it is below ``top_p`` (the first token is always kept), renormalise, draw. Tied logits rank the higher
token id first, as a stable ascending sort does (transformers' CPU sort leaves their order unspecified).

Exactness: a token's mass is a fixed-point integer, its float32 ``exp(logit - max)`` times ``2**S`` truncated, with the
largest ``S`` that lets a row's sum fit int64 (44 bits for 152k tokens): every mass sum is exact whatever order it is
added in, so the kept set is a function of the ranking alone, however its boundary is found. The fast path puts the
logits into 4096 equal-width buckets (a monotone map, so whole buckets rank above or below each other), finds the bucket
that holds the boundary from the buckets' masses, and ranks only that bucket. The full sort is the reference the tests
compare with. The draw maps one 53-bit uniform per row onto the kept masses in token-id order, so each token's
probability is its mass's share to within 2**-53 (transformers draws from float32 probabilities).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from transformers import LogitsProcessor

from .errors import ThinkDiffError

BUCKETS = 4096
MASS_RANGE = 32.0  # logits further below the row's maximum have mass 0 (exp(-32) * 2**44 < 1): they share bucket 0
UNIFORM_BITS = 53


def fixed_point_masses(logits: torch.Tensor) -> torch.Tensor:
    """``exp(logit - row max)`` (float32) times ``2**S``, truncated to int64; a whole row sums to at most ``2**62``."""
    scale = 62 - (logits.shape[-1] - 1).bit_length()
    return (logits - logits.amax(-1, keepdim=True)).exp_().mul_(2.0**scale).long()


def mass_limits(totals: torch.Tensor, top_p: float) -> list[int]:
    """Per row, the smallest integer >= ``top_p`` times the row's total mass (exact): a token is kept when the mass
    ranked above it is below this."""
    return [max(1, math.ceil(Fraction(top_p) * total)) for total in totals.tolist()]


def _by_sorting(logits: torch.Tensor, masses: torch.Tensor, top_p: float) -> torch.Tensor:
    """The reference: rank the whole vocabulary (stable ascending sort, reversed), keep the ranks whose mass above is
    below the limit."""
    order = logits.sort(stable=True).indices.flip(-1)
    ranked = masses.gather(-1, order)
    limits = masses.new_tensor(mass_limits(masses.sum(-1), top_p))
    kept = (ranked.cumsum(-1) - ranked) < limits[:, None]
    return torch.zeros_like(kept).scatter_(-1, order, kept)


def logit_buckets(logits: torch.Tensor) -> torch.Tensor:
    """``BUCKETS`` equal-width buckets over ``[max - MASS_RANGE, max]`` per row, lower logits in bucket 0. Monotone in the
    logit (a scaled, shifted, clamped and truncated float never inverts two values), so whole buckets rank as units."""
    width = BUCKETS / MASS_RANGE
    offset = (MASS_RANGE - logits.amax(-1, keepdim=True)) * width
    return torch.add(offset, logits, alpha=width).clamp_(0, BUCKETS - 1).long()


def _by_buckets(logits: torch.Tensor, masses: torch.Tensor, top_p: float) -> torch.Tensor:
    """Buckets above the boundary's are kept whole, those below dropped; only the boundary's bucket is ranked."""
    buckets = logit_buckets(logits)
    bucket_mass = masses.new_zeros((logits.shape[0], BUCKETS)).scatter_add_(-1, buckets, masses)
    mass_above = bucket_mass.flip(-1).cumsum(-1).flip(-1) - bucket_mass
    limits = mass_limits(bucket_mass.sum(-1), top_p)
    # The lowest bucket with mass whose first token is kept (zero-mass tokens rank last and are never kept).
    open_buckets = (bucket_mass > 0) & (mass_above < masses.new_tensor(limits)[:, None])
    boundary = open_buckets.int().argmax(-1, keepdim=True)
    keep = buckets > boundary
    rows, band = (buckets == boundary).nonzero(as_tuple=True)
    starts = [0, *torch.bincount(rows, minlength=logits.shape[0]).cumsum(0).tolist()]
    above = mass_above.gather(-1, boundary)[:, 0].tolist()
    for row, limit in enumerate(limits):
        tokens = band[starts[row]:starts[row + 1]]  # in id order, so the stable sort ranks tied ids as the reference does
        ranked = tokens[logits[row, tokens].sort(stable=True).indices.flip(0)]
        before = above[row] + masses[row, ranked].cumsum(0) - masses[row, ranked]
        keep[row, ranked[before < limit]] = True
    return keep


def top_p_mask(logits: torch.Tensor, masses: torch.Tensor, top_p: float, full_sort: bool = False) -> torch.Tensor:
    """The tokens top-p keeps, [batch, vocab] bool. ``full_sort`` ranks the whole vocabulary (the reference)."""
    return (_by_sorting if full_sort else _by_buckets)(logits, masses, top_p)


def draw(masses: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """One token per row, with probability proportional to its mass among the kept tokens. The uniforms come from
    torch's CPU generator, so a seed draws the same numbers whichever device the model runs on."""
    cdf = torch.where(keep, masses, 0).cumsum(-1)
    uniforms = torch.randint(0, 2**UNIFORM_BITS, (masses.shape[0],)).tolist()
    targets = [(u * total) >> UNIFORM_BITS for u, total in zip(uniforms, cdf[:, -1].tolist(), strict=True)]
    return torch.searchsorted(cdf, cdf.new_tensor(targets)[:, None], right=True)[:, 0]


NON_FINITE_LOGITS = (
    "the VLM's logits are NaN or infinite: it overflowed in its working precision (Qwen2 does in fp16, which dtype auto "
    "picks on GPUs without bf16, those before Ampere). Set the VLM Loader's dtype to fp32 (or bf16 where the GPU has it) "
    "and run again.")


def check_finite(scores: torch.Tensor) -> None:
    """Refuse NaN / +inf logits with the fix; -inf (a masked token) is fine. A NaN row would make the draw index past the
    vocabulary, a device-side assert that breaks CUDA for the whole process."""
    if not bool((scores < math.inf).all()):
        raise ThinkDiffError(NON_FINITE_LOGITS)


class FiniteLogits(LogitsProcessor):
    """:func:`check_finite` at every step of greedy decoding."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        check_finite(scores)
        return scores


class TopPSampler(LogitsProcessor):
    """Temperature, top-p and the draw in one logits processor, for ``generate(do_sample=False)``.

    It returns 0 at the drawn token and -inf elsewhere, so greedy decoding takes exactly the sampled token. It also masks
    the end-of-sequence ids during the first ``min_new_tokens`` steps (transformers' ``min_new_tokens``, without that
    processor's scan of the vocabulary at every step). ``full_sort`` uses the reference ranking.
    """

    def __init__(self, temperature: float, top_p: float, prompt_length: int, min_new_tokens: int, eos_token_ids: list[int],
                 full_sort: bool = False) -> None:
        self.temperature, self.top_p, self.full_sort = temperature, top_p, full_sort
        self.prompt_length, self.min_new_tokens, self.eos_token_ids = prompt_length, min_new_tokens, eos_token_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        check_finite(scores)
        logits = scores / self.temperature
        if input_ids.shape[1] - self.prompt_length < self.min_new_tokens:
            logits[:, self.eos_token_ids] = -math.inf
        masses = fixed_point_masses(logits)
        tokens = draw(masses, top_p_mask(logits, masses, self.top_p, self.full_sort))
        return torch.full_like(scores, -math.inf).scatter_(-1, tokens[:, None], 0.0)
