"""The few places where transformers 4.5x and 5.x spell things differently."""

from __future__ import annotations

import torch
import transformers
from packaging.version import Version

_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s precision argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    return {_DTYPE_KWARG: dtype}
