"""The plan of LVLM stage A that both backends follow: which samples make which shard, each sample's instruction, the
sampling settings, the images' pixel budget, the manifest that pins them, and which shards a process still has to do.

Samples are cut into fixed shards of ``samples_per_shard`` consecutive dataset indices; process ``r`` of ``n`` takes the
shards ``r, r + n, ...`` and skips those already finished, so a restarted job continues where it stopped. The
instruction of a sample and the sampling seed depend only on the run seed and the sample indices, so a rerun
reproduces a shard.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Sampler

from thinkdiff.errors import ThinkDiffError
from thinkdiff.images import fit_to_pixel_budget
from thinkdiff.vlm import SamplingOptions

from .config import Config, PrecomputeConfig
from .feature_store import finished_shards, read_manifest, write_manifest
from .pairs import Pair, PairDataset

# Manifest entries that must not change while a features folder is being filled.
FIXED_MANIFEST_KEYS = ("vlm", "hidden_size", "num_samples", "samples_per_shard", "seed", "sampling", "instructions",
                       "min_pixels", "max_pixels", "dtype", "storage_dtype")


def instruction_for(instructions: list[str], seed: int, index: int) -> str:
    """The instruction of sample ``index``, drawn uniformly (reference) from a per-sample generator."""
    return random.Random(f"{seed}:instruction:{index}").choice(instructions)


def sampling_options(config: PrecomputeConfig, seed: int) -> SamplingOptions:
    """Reference stage-A sampling: temperature 0.6, top-p 0.9, up to 256 tokens, stop at EOS (vLLM min_tokens 1)."""
    return SamplingOptions(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
                           greedy=config.greedy, stop_at_eos=True, seed=seed)


class ReadyImages(Dataset):
    """``(index, pair)`` with the image already sized for Qwen2-VL (done in DataLoader workers); pair ``None`` if unusable."""

    def __init__(self, pairs: PairDataset, min_pixels: int, max_pixels: int) -> None:
        self.pairs, self.min_pixels, self.max_pixels = pairs, min_pixels, max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[int, Pair | None]:
        pair = self.pairs[index]
        if pair is None:
            return index, None
        try:
            image = fit_to_pixel_budget([pair.image], self.min_pixels, self.max_pixels)[0]
        except ThinkDiffError:  # too small, or an extreme aspect ratio
            return index, None
        return index, Pair(pair.key, image, pair.caption)


class ShardBatches(Sampler[list[int]]):
    """Batches of consecutive indices that never cross a shard boundary, for the given shards in order."""

    def __init__(self, shards: list[int], samples_per_shard: int, num_samples: int, batch_size: int) -> None:
        self.shards, self.per_shard, self.num_samples, self.batch_size = shards, samples_per_shard, num_samples, batch_size

    def shard_range(self, shard: int) -> range:
        return range(shard * self.per_shard, min((shard + 1) * self.per_shard, self.num_samples))

    def __iter__(self) -> Iterator[list[int]]:
        for shard in self.shards:
            indices = self.shard_range(shard)
            for start in range(0, len(indices), self.batch_size):
                yield list(indices[start:start + self.batch_size])

    def __len__(self) -> int:
        return sum(math.ceil(len(self.shard_range(s)) / self.batch_size) for s in self.shards)


def manifest_for(config: Config, hidden_size: int, num_samples: int) -> dict[str, Any]:
    """What ``manifest.json`` records; ``FIXED_MANIFEST_KEYS`` of it must not change while a folder fills."""
    pre = config.precompute
    vlm = config.path(pre.vlm)
    sampling = sampling_options(pre, 0)
    return {"vlm": vlm.name, "vlm_path": str(vlm), "hidden_size": hidden_size, "dtype": pre.dtype,
            "storage_dtype": pre.storage_dtype, "num_samples": num_samples, "samples_per_shard": pre.samples_per_shard,
            "seed": config.run.seed,
            "sampling": {"max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
                         "greedy": sampling.greedy, "stop_at_eos": sampling.stop_at_eos},
            "instructions": list(pre.instructions), "min_pixels": pre.min_pixels, "max_pixels": pre.max_pixels}


def check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest of a new folder, or refuse settings that differ from an existing one's."""
    if not (folder / "manifest.json").is_file():
        write_manifest(folder, manifest)
        return
    existing = read_manifest(folder)
    changed = [k for k in FIXED_MANIFEST_KEYS if existing.get(k) != manifest[k]]
    if changed:
        raise ThinkDiffError(f"{folder} was filled with different settings ({', '.join(changed)}); "
                             "use a new [precompute] features_dir or restore the settings")


def unfinished_shards(folder: Path, num_samples: int, samples_per_shard: int, rank: int, world: int) -> list[int]:
    """Process ``rank`` of ``world`` takes shards ``rank, rank + world, ...``; those not finished yet."""
    done = set(finished_shards(folder))
    return [s for s in range(rank, math.ceil(num_samples / samples_per_shard), world) if s not in done]
