"""Read the tensors of a ``torch.save`` file without running code from it.

``torch.load(weights_only=True)`` refuses files that also pickle other objects (a training
config, an optimizer class...). For converting such checkpoints, this unpickler resolves only
tensor-rebuilding functions, dtypes and plain containers; every other global becomes an inert
:class:`Opaque` placeholder, so no function or constructor named in the file is ever called.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch

from .errors import ThinkDiffError

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
}


class Opaque:
    """Stands in for any non-tensor object of the file; records its arguments and does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> Opaque:
        return Opaque(*args, **kwargs)


def _resolve(module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    if module == "torch._utils" and name.startswith("_rebuild_") and name != "_rebuild_from_type_v2":
        return getattr(torch._utils, name)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return Opaque


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _resolve(module, name)


class _TensorsOnlyPickle:
    """A ``pickle_module`` for ``torch.load`` that uses :class:`_Unpickler`."""

    Unpickler = _Unpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _Unpickler(file, **kwargs).load()


_LEGACY_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)  # what a pre-1.6 torch.save writes first


def checkpoint_format(path: str | Path) -> Literal["zip", "legacy"]:
    """``zip`` (torch.save since 1.6) or ``legacy`` (the older pickle stream); anything else is refused as damaged."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        if f.read(len(_LEGACY_HEADER)) == _LEGACY_HEADER:
            return "legacy"
    raise ThinkDiffError(f"{path.name} is not a PyTorch checkpoint (neither torch.save format): the download is damaged or "
                         "it is another kind of file; download it again.")


def load_tensors_only(path: str | Path) -> Any:
    """``torch.load`` the file, keeping tensors and containers and neutralising everything else.

    Zip checkpoints are memory-mapped: tensors the caller does not use (a release's T5 embedding, optimizer moments)
    are never read into memory.
    """
    mmap = checkpoint_format(path) == "zip"
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_TensorsOnlyPickle, mmap=mmap)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise ThinkDiffError(f"{Path(path).name} is not a readable PyTorch checkpoint ({e}); download it again.") from e
