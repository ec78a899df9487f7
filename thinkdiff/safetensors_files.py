"""Reading our single-file ``.safetensors`` formats (tensors plus string metadata) with a clear error."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import ThinkDiffError
from .safetensors_header import check_complete


def read_safetensors(path: Path, redo: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of ``path`` on the CPU; an unreadable file raises with ``redo`` as the fix."""
    check_complete(path, redo)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise ThinkDiffError(f"{path.name} is not a readable .safetensors file ({e}); {redo}.") from e
    return metadata, tensors
