"""The ThinkDiff aligner: Linear -> GELU(erf) -> Linear -> T5 RMSNorm.

It maps VLM features (or vision-encoder tokens) into the T5-XXL encoder space that Flux.1 and
CogVideoX are conditioned on. Widths are read from the weights, never assumed.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import nn

T5_NORM_EPS = 1e-6


class T5RMSNorm(nn.Module):
    """T5's LayerNorm: RMS scaling without mean subtraction or bias, computed in float32."""

    def __init__(self, dim: int, eps: float = T5_NORM_EPS, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        weight = self.weight.to(x.device)
        if weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(weight.dtype)
        return weight * x


class Aligner(nn.Module):
    """ThinkDiff's ``mlp2x_gelu_t5_norm`` projector.

    ``operations`` is a namespace providing ``Linear`` (``torch.nn`` by default; ComfyUI passes
    ``comfy.ops.manual_cast`` so the memory manager can cast and offload it).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, operations: Any = nn,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.in_proj = operations.Linear(in_dim, hidden_dim, bias=True, device=device, dtype=dtype)
        self.act = nn.GELU(approximate="none")
        self.out_proj = operations.Linear(hidden_dim, out_dim, bias=True, device=device, dtype=dtype)
        self.norm = T5RMSNorm(out_dim, device=device, dtype=dtype)

    @property
    def in_dim(self) -> int:
        return self.in_proj.in_features

    @property
    def out_dim(self) -> int:
        return self.out_proj.out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(self.out_proj(self.act(self.in_proj(features))))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], operations: ModuleType | Any = nn,
                        dtype: torch.dtype | None = None) -> Aligner:
        """Build an aligner whose widths are those of ``state`` (our key names) and load it strictly."""
        hidden_dim, in_dim = state["in_proj.weight"].shape
        out_dim = state["out_proj.weight"].shape[0]
        aligner = cls(in_dim, hidden_dim, out_dim, operations=operations,
                      dtype=dtype or state["in_proj.weight"].dtype)
        aligner.load_state_dict(state, strict=True)
        return aligner
