"""LVLM stage A on transformers (``[precompute] backend = "transformers"``): batches go through the library
(``QwenVLEncoder.prepare`` / ``generate``), so the stored features have exactly the inference semantics (row k = the
post-final-norm state that sampled token k). Processes come from ``accelerate launch``.
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import DataLoader

from thinkdiff.dtypes import DTYPES
from thinkdiff.progress import Progress
from thinkdiff.vlm import QwenVLEncoder, VLMRequest

from .config import Config, PrecomputeConfig
from .feature_store import GeneratedSample, write_shard
from .pairs import Pair, pairs_from_config
from .stage_a_plan import (
    ReadyImages,
    ShardBatches,
    check_manifest,
    instruction_for,
    manifest_for,
    sampling_options,
    unfinished_shards,
)


def generate_batch(encoder: QwenVLEncoder, items: list[tuple[int, Pair | None]], config: PrecomputeConfig,
                   seed: int) -> list[GeneratedSample]:
    """One batched generation for the usable items (the sampling seed follows from the batch's first index)."""
    usable = [(index, pair) for index, pair in items if pair is not None]
    if not usable:
        return []
    instructions = [instruction_for(config.instructions, seed, index) for index, _ in usable]
    requests = [VLMRequest(text, [pair.image]) for text, (_, pair) in zip(instructions, usable, strict=True)]
    inputs = encoder.prepare(requests, config.min_pixels, config.max_pixels, config.max_new_tokens)
    outputs = encoder.generate(inputs, sampling_options(config, seed + usable[0][0]))
    return [GeneratedSample(pair.key, text, out.features, out.token_ids, out.text)
            for text, (_, pair), out in zip(instructions, usable, outputs, strict=True)]


def precompute_with_transformers(config: Config) -> Path:
    """Fill ``precompute.features_dir`` through the library, one process per ``accelerate launch`` rank."""
    pre = config.precompute
    accelerator = Accelerator()
    vlm, folder = config.path(pre.vlm), config.path(pre.features_dir)
    pairs = pairs_from_config(config, require_caption=False)  # the target is Qwen's own answer, not the caption
    encoder = QwenVLEncoder.from_folder(vlm, dtype=DTYPES[pre.dtype]).to(accelerator.device)
    if accelerator.is_main_process:
        check_manifest(folder, manifest_for(config, encoder.hidden_size, len(pairs)))
    accelerator.wait_for_everyone()
    mine = unfinished_shards(folder, len(pairs), pre.samples_per_shard, accelerator.process_index, accelerator.num_processes)
    batches = ShardBatches(mine, pre.samples_per_shard, len(pairs), pre.batch_size)
    loader = DataLoader(ReadyImages(pairs, pre.min_pixels, pre.max_pixels), batch_sampler=batches, collate_fn=list,
                        num_workers=config.data.num_workers)
    progress = Progress(sum(len(batches.shard_range(s)) for s in mine), f"[precompute {accelerator.process_index}]",
                        pre.progress_every_s)
    shard_samples: list[GeneratedSample] = []
    shard_seen = 0
    for items in loader:
        shard = items[0][0] // pre.samples_per_shard
        generated = generate_batch(encoder, items, pre, config.run.seed)
        shard_samples.extend(generated)
        shard_seen += len(items)
        progress.update(len(items), sum(len(s.token_ids) for s in generated))
        if shard_seen == len(batches.shard_range(shard)):
            write_shard(folder, shard, shard_samples, encoder.hidden_size, skipped=shard_seen - len(shard_samples),
                        dtype=DTYPES[pre.storage_dtype])
            shard_samples, shard_seen = [], 0
    accelerator.wait_for_everyone()
    return folder
