"""Reading and writing aligner weights.

Our format is one ``.safetensors`` file with keys ``in_proj.*``, ``out_proj.*``, ``norm.weight`` and
string metadata (``format``, ``variant``, ``input_dim``, ``hidden_dim``, ``output_dim``, ``source_model``).
The original release checkpoints are ``torch.save`` of ``{"model", "optimizer", "config", "scaler", "epoch"}``
whose ``"model"`` holds ``mm_projector.{0,2,3}.*`` plus the frozen, tied T5 embedding(s)
(``language_model.{decoder,encoder}.embed_tokens.weight``, thinkdiff-reference.md 2.4). They are read with
``weights_only=True``, memory-mapped, and only the aligner's five tensors are kept; files that also pickle other
Python objects are refused and must go through :func:`convert_release_checkpoint` once.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import ThinkDiffError
from .model_setup import CONVERT_COMMAND
from .safe_pickle import checkpoint_format, load_tensors_only
from .safetensors_files import read_safetensors

FORMAT_NAME = "thinkdiff.aligner"
FORMAT_VERSION = "1"
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
RELEASE_KEYS = {
    "mm_projector.0.weight": "in_proj.weight",
    "mm_projector.0.bias": "in_proj.bias",
    "mm_projector.2.weight": "out_proj.weight",
    "mm_projector.2.bias": "out_proj.bias",
    "mm_projector.3.weight": "norm.weight",
}
OUR_KEYS = tuple(RELEASE_KEYS.values())
# What the released aligners were trained on, by input width (thinkdiff-reference.md, section 2).
KNOWN_SOURCES = {
    3584: ("lvlm", "Qwen/Qwen2-VL-7B-Instruct"),
    1408: ("clip", "Salesforce/blip2-flan-t5-xxl (EVA ViT-g/14 vision tower)"),
}


@dataclass
class AlignerWeights:
    """Aligner tensors under our key names plus the file's metadata."""

    state: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def in_dim(self) -> int:
        return int(self.state["in_proj.weight"].shape[1])

    @property
    def hidden_dim(self) -> int:
        return int(self.state["in_proj.weight"].shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.state["out_proj.weight"].shape[0])

    @property
    def variant(self) -> str:
        return self.metadata.get("variant") or KNOWN_SOURCES.get(self.in_dim, ("unknown", ""))[0]

    def describe(self) -> str:
        return f"{self.variant} aligner {self.in_dim} -> {self.hidden_dim} -> {self.out_dim}"


def _normalise_keys(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Map release or our key names (optionally under ``module.``) to ours; check shapes."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        key = key.removeprefix("module.")
        key = RELEASE_KEYS.get(key, key)
        if key in OUR_KEYS:
            out[key] = tensor
    missing = [k for k in OUR_KEYS if k not in out]
    if missing:
        found = ", ".join(sorted(state)[:8]) or "no tensors"
        raise ThinkDiffError(
            f"{path.name} is not a ThinkDiff aligner: missing {', '.join(missing)} (found: {found}). "
            "Expected the keys of the ThinkDiff release (mm_projector.0/2/3.*) or of this pack's format.")
    w1, b1, w2, b2, g = (out[k] for k in OUR_KEYS)
    hidden, out_dim = w1.shape[0], w2.shape[0]
    if (w1.ndim, b1.shape, w2.shape[1:], b2.shape, g.shape) != (2, (hidden,), (hidden,), (out_dim,), (out_dim,)):
        raise ThinkDiffError(
            f"{path.name} has inconsistent aligner shapes: in_proj {tuple(w1.shape)}/{tuple(b1.shape)}, "
            f"out_proj {tuple(w2.shape)}/{tuple(b2.shape)}, norm {tuple(g.shape)}. The file is damaged or not an aligner.")
    return out


def _release_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ThinkDiffError(f"{path.name} holds a {type(obj).__name__}, not a state dict.")
    return obj


def load_aligner_weights(path: str | Path) -> AlignerWeights:
    """Load aligner weights from our ``.safetensors`` format or a release ``.pth`` (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise ThinkDiffError(f"aligner file not found: {path}")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        metadata, state = read_safetensors(path, "download it again")
        return AlignerWeights(_normalise_keys(state, path), metadata)
    mmap = checkpoint_format(path) == "zip"  # a release file's T5 embedding and optimizer state are never read
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise ThinkDiffError(
            f"{path.name} pickles Python objects besides tensors, so it is not loaded (loading it could run code). "
            f"Extract its tensors once, without running anything from it: `{CONVERT_COMMAND} {path} {path.with_suffix('.safetensors')}`, "
            "then pick the .safetensors file.") from e
    except (RuntimeError, OSError, EOFError) as e:
        raise ThinkDiffError(f"{path.name} is not a readable PyTorch checkpoint ({e}); download it again.") from e
    return AlignerWeights(_normalise_keys(_release_state_dict(obj, path), path), {"converted_from": path.name})


def save_aligner_weights(weights: AlignerWeights, path: str | Path, **metadata: str) -> Path:
    """Write ``weights`` in our format (float32 tensors, complete metadata)."""
    path = Path(path)
    variant, source = KNOWN_SOURCES.get(weights.in_dim, ("unknown", "unknown"))
    meta = {"variant": variant, "source_model": source, **weights.metadata, **metadata,
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "input_dim": str(weights.in_dim),
            "hidden_dim": str(weights.hidden_dim), "output_dim": str(weights.out_dim)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in weights.state.items()}, str(path), metadata=meta)
    return path


def convert_release_checkpoint(src: str | Path, dst: str | Path, **metadata: str) -> AlignerWeights:
    """Convert a release checkpoint to our format, unpickling tensors only (no code from the file runs); returns the
    written file, read back."""
    src = Path(src)
    if src.suffix.lower() in SAFETENSORS_SUFFIXES:
        weights = load_aligner_weights(src)
    else:
        obj = load_tensors_only(src)
        weights = AlignerWeights(_normalise_keys(_release_state_dict(obj, src), src), {"converted_from": src.name})
    return load_aligner_weights(save_aligner_weights(weights, dst, **metadata))
