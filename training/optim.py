"""The reference optimiser and learning-rate schedule (thinkdiff-reference.md 5.3, LAVIS/MiniGPT-4 ``optims.py``).

AdamW with weight decay on weight matrices only. The rate is a pure function of the global step, so
the schedule's whole state is the step counter stored in a checkpoint:
linear warm-up ``warmup_lr -> lr`` over ``warmup_steps``, then cosine ``lr -> min_lr`` over ``cosine_steps``
counted from step 0, then held at ``min_lr``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig

NO_DECAY_MARKERS = ("bias", "ln", "bn")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay for trainable params with ndim >= 2 whose name has no bias/ln/bn; none for the rest (biases, norm)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            wants_decay = param.ndim >= 2 and not any(marker in name for marker in NO_DECAY_MARKERS)
            (decay if wants_decay else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=learning_rate(0, config), betas=config.betas)


def learning_rate(step: int, config: OptimConfig) -> float:
    """The rate used for optimizer step ``step`` (0-based)."""
    if step < config.warmup_steps:
        return min(config.lr, config.warmup_lr + (config.lr - config.warmup_lr) * step / max(config.warmup_steps, 1))
    progress = min(step, config.cosine_steps) / config.cosine_steps  # held at min_lr past the horizon (LAVIS would rise again)
    return (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)) + config.min_lr


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, config: OptimConfig) -> float:
    lr = learning_rate(step, config)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
