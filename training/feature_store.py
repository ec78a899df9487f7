"""Stage A output: shards of generated-token features, token ids and texts (safetensors + JSON, no pickle).

A shard ``shard-NNNNNN`` is two files: ``.safetensors`` with ``features`` [sum L, H] (bf16 by default),
``token_ids`` [sum L] and ``offsets`` [n + 1] (sample i owns rows ``offsets[i]:offsets[i+1]``), and
``.json`` with the per-sample keys, instructions and texts. The JSON is written last (atomically), so
its presence marks a finished shard. ``manifest.json`` records how the features were made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from thinkdiff.atomic_files import write_atomically, write_text_atomically
from thinkdiff.errors import ThinkDiffError
from thinkdiff.safetensors_header import check_complete

MANIFEST = "manifest.json"


@dataclass
class GeneratedSample:
    key: str
    instruction: str
    features: torch.Tensor  # [L, H]
    token_ids: torch.Tensor  # [L]
    text: str


def shard_stem(shard_id: int) -> str:
    return f"shard-{shard_id:06d}"


def write_shard(folder: Path, shard_id: int, samples: list[GeneratedSample], hidden_size: int, skipped: int,
                dtype: torch.dtype = torch.bfloat16) -> None:
    """Write one finished shard; ``skipped`` counts its unreadable inputs."""
    lengths = torch.tensor([0] + [len(s.token_ids) for s in samples], dtype=torch.int64)
    tensors = {
        "features": torch.cat([s.features.to(dtype) for s in samples]) if samples else torch.zeros(0, hidden_size, dtype=dtype),
        "token_ids": torch.cat([s.token_ids.to(torch.int64) for s in samples]) if samples else torch.zeros(0, dtype=torch.int64),
        "offsets": lengths.cumsum(0),
    }
    stem = shard_stem(shard_id)
    write_atomically(folder / f"{stem}.safetensors", lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, str(p)))
    records = {"samples": [{"key": s.key, "instruction": s.instruction, "text": s.text} for s in samples], "skipped": skipped}
    write_text_atomically(folder / f"{stem}.json", json.dumps(records, ensure_ascii=False))


def finished_shards(folder: Path) -> list[int]:
    return sorted(int(p.stem.removeprefix("shard-")) for p in folder.glob("shard-*.json"))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(folder / MANIFEST, json.dumps(manifest, indent=1))


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise ThinkDiffError(f"{folder} holds no precomputed features ({MANIFEST} missing): run `python -m training precompute` first")
    return json.loads(path.read_text(encoding="utf-8"))


def _read_shard_records(folder: Path, shard_id: int) -> dict[str, Any]:
    """A finished shard's JSON, after checking that its tensors file is whole; a damaged shard names its fix."""
    stem = shard_stem(shard_id)
    redo = f"delete {stem}.json and {stem}.safetensors in {folder} and rerun `python -m training precompute` to redo that shard"
    if not (folder / f"{stem}.safetensors").is_file():
        raise ThinkDiffError(f"{stem}.safetensors is missing: {redo}")
    check_complete(folder / f"{stem}.safetensors", redo)
    try:
        return json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ThinkDiffError(f"{stem}.json is damaged ({e}): {redo}") from e


class FeatureShards(Dataset):
    """All finished shards of a features folder as one random-access dataset of ``(features, token_ids)``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = read_manifest(folder)
        self.index: list[tuple[int, int]] = []  # (shard id, row in shard)
        self.skipped_inputs = 0
        for shard_id in finished_shards(folder):
            records = _read_shard_records(folder, shard_id)
            self.index.extend((shard_id, row) for row in range(len(records["samples"])))
            self.skipped_inputs += records["skipped"]
        if not self.index:
            raise ThinkDiffError(f"{folder} has no finished feature shards")
        self._open: dict[int, Any] = {}  # per worker process: safetensors handles (memory-mapped)

    def __len__(self) -> int:
        return len(self.index)

    def _handle(self, shard_id: int) -> Any:
        if shard_id not in self._open:
            self._open[shard_id] = safe_open(str(self.folder / f"{shard_stem(shard_id)}.safetensors"), framework="pt")
        return self._open[shard_id]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        shard_id, row = self.index[index]
        handle = self._handle(shard_id)
        start, end = handle.get_slice("offsets")[row:row + 2].tolist()
        return handle.get_slice("features")[start:end], handle.get_slice("token_ids")[start:end]

    def __getstate__(self) -> dict[str, Any]:  # handles are not shared with DataLoader workers
        return {**self.__dict__, "_open": {}}
