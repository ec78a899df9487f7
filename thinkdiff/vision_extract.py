"""Cut the vision tower out of a local BLIP-2 folder (e.g. Salesforce/blip2-flan-t5-xxl) into one vision file.

Only the ``vision_model.*`` tensors are read (lazily from safetensors shards, or memory-mapped with
``weights_only=True`` from ``.bin`` shards), so the 15 GB checkpoint never has to fit in memory and users
keep about 2 GB (fp16) instead of the whole model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import Blip2Config, Blip2VisionModel

from .errors import ThinkDiffError
from .vision import BLIP2_URL, REFERENCE_GRID, save_vision_file

PREFIX = "vision_model."


def _shards(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return sorted({folder / file for key, file in weight_map.items() if key.startswith(PREFIX)})
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def _vision_tensors(shard: Path) -> dict[str, torch.Tensor]:
    if shard.suffix == ".safetensors":
        with safe_open(str(shard), framework="pt", device="cpu") as f:
            return {k.removeprefix(PREFIX): f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)}  # noqa: SIM118
    state = torch.load(str(shard), map_location="cpu", weights_only=True, mmap=True)
    return {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}


def extract_blip2_vision(folder: str | Path, target: str | Path, dtype: torch.dtype = torch.float16,
                         grid: int = REFERENCE_GRID) -> Path:
    """Write ``target`` with the BLIP-2 vision tower of ``folder`` stored as ``dtype``."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ThinkDiffError(f"{folder} is not a BLIP-2 model folder (no config.json); download {BLIP2_URL} first.")
    config = Blip2Config.from_pretrained(str(folder), local_files_only=True).vision_config
    state: dict[str, torch.Tensor] = {}
    for shard in _shards(folder):
        state.update(_vision_tensors(shard))
    if not state:
        raise ThinkDiffError(f"no {PREFIX}* weights in {folder}: is the download complete?")
    with torch.device("meta"):
        model = Blip2VisionModel(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ThinkDiffError(f"the vision weights in {folder} do not match its config: {e}") from e
    return save_vision_file(model, target, grid=grid, dtype=dtype, source_model=folder.name)
