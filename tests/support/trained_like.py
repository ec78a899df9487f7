"""Random weights with the statistics of a trained transformer, for measuring weight formats.

A freshly initialised model (N(0, 0.02) everywhere, zero biases, unit norms, a tied head) flatters a weight format:
nothing is small, nothing stands out, and a dropped bias or norm changes nothing. Trained LLMs differ (Qwen2-VL-7B's
matrices have standard deviations of about 0.01 to 0.03, large q/k/v biases, norms far from 1, a few outlier rows and
columns, and an untied head), and those are what make a format lose fidelity: e4m3fn's normal range starts at 2**-6, so
unscaled small weights fall into its subnormals. :func:`make_trained_like` gives a model those matrices, on top of the
non-zero biases and norms every tiny test model has (``tiny_models.trained_looking``).
"""

from __future__ import annotations

import torch
from torch import nn

OUTLIER_SHARE = 0.01  # of rows and of columns, at least one of each per matrix


def _outliers(size: int, generator: torch.Generator, low: float, high: float) -> torch.Tensor:
    """Per-index multipliers: 1, except a few indices scaled by factors drawn from [low, high]."""
    factors = torch.ones(size)
    count = max(1, int(OUTLIER_SHARE * size))
    picked = torch.randperm(size, generator=generator)[:count]
    factors[picked] = torch.empty(count).uniform_(low, high, generator=generator)
    return factors


def trained_like_matrix(rows: int, columns: int, generator: torch.Generator) -> torch.Tensor:
    """A few rows ×2–4 and a few columns ×8–20 (outlier input channels), the whole with a σ drawn from [0.01, 0.03]."""
    sigma = torch.empty(()).uniform_(0.01, 0.03, generator=generator)
    weight = torch.randn(rows, columns, generator=generator)
    weight = weight * _outliers(rows, generator, 2, 4)[:, None] * _outliers(columns, generator, 8, 20)[None, :]
    return weight / weight.std() * sigma


@torch.no_grad()
def make_trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite ``model``'s matrices (Linear, Embedding, an untied head) in place with trained-like ones; biases and
    norms are :func:`tests.support.tiny_models.trained_looking`'s (``make_qwen2vl`` sets them). Returns the model."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.copy_(trained_like_matrix(*module.weight.shape, generator))
    return model
