"""LVLM stage A: let Qwen2-VL answer one instruction per image and store its generated-token features.

Both backends fill the same shards by the plan of ``stage_a_plan.py``: ``transformers_stage_a.py`` (the library's
batched generation) and ``vllm_stage_a.py`` (an inference engine); ``[precompute] backend`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from thinkdiff.errors import ThinkDiffError

from .config import Config
from .transformers_stage_a import precompute_with_transformers
from .vllm_stage_a import precompute_with_vllm

BACKENDS: dict[str, Callable[[Config], Path]] = {"transformers": precompute_with_transformers, "vllm": precompute_with_vllm}


def precompute(config: Config) -> Path:
    """Fill ``precompute.features_dir``; returns it. Safe to rerun: finished shards are skipped."""
    if not config.precompute.vlm:
        raise ThinkDiffError("set [precompute] vlm to a Qwen2-VL(-Instruct) Hugging Face folder")
    return BACKENDS[config.precompute.backend](config)
