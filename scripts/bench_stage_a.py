"""Stage A throughput on random Qwen2-VL models: the unbatched loop, batched transformers and vLLM, in one run.

    .dev/venv-vllm/bin/python scripts/bench_stage_a.py                  # tiny and mid on the CPU, fp32 (vLLM's CPU build)
    python scripts/bench_stage_a.py --sizes mid --device cuda --dtype bf16 --requests 256

Every run answers the same requests (one 224x224 image and a reference instruction each) with stage A's sampling
(T 0.6, top-p 0.9, stop at an end token: random models rarely sample one, so answers run to --tokens):
  unbatched             the transformers backend one request at a time (training.transformers_stage_a.generate_batch)
  batched               the transformers backend, --batch requests per generate() (what `precompute` runs)
  bare generate         model.generate on the same prepared batches with the same sampler: the floor under "batched"
  batched, HF sampling  "batched" with transformers' own top-p sort and multinomial instead of thinkdiff.sampling
  vLLM tokens / states  the vLLM backend's two engines, all requests per call: generate, then one pooling pass
Printed: seconds, samples/s, generated tokens/s and the ratio to the unbatched loop. Times exclude model loading and
engine start (printed apart) and are medians of --repeats after a warm-up (the transformers runs interleaved, so that a
change in the machine's load hits them alike). Sizes: tiny = text 64 wide, 2 heads of 32
(vLLM's CPU attention needs head sizes >= 32); mid = Qwen2-VL-2B widths (1536, 12 heads of 128), 2 text and 2 vision
layers. Without vLLM installed the vLLM rows are left out.

    .dev/venv-vllm/bin/python scripts/bench_stage_a.py --states-memory --sizes mid --requests 64 --side 448

measures instead the host RAM of vLLM's states phase for one chunk of --requests (--side px images, --tokens answer
tokens each), each way in a fresh process with its engine warmed up: before (0.2: one LLM.encode per chunk, the answer
rows kept as views of the outputs, which hold every position) and after (training.vllm_stage_a.answer_states: streamed,
a copy of the answer rows at the storage dtype). Printed: the peak growth of the process's resident memory over the
chunk (Linux: VmHWM, reset first; the engine core runs in the process on the CPU) and the bytes the kept states hold,
with their ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from bench_training import timed  # noqa: E402

from tests.support.tiny_models import make_qwen2vl  # noqa: E402
from thinkdiff.dtypes import DTYPES  # noqa: E402
from thinkdiff.sampling_options import SamplingOptions  # noqa: E402
from thinkdiff.vlm import QwenVLEncoder, VLMRequest  # noqa: E402
from training.config import Config  # noqa: E402
from training.pairs import Pair  # noqa: E402
from training.stage_a_plan import instruction_for, sampling_options  # noqa: E402
from training.transformers_stage_a import generate_batch  # noqa: E402

SIZES = {"tiny": ("tiny-hd32", None, 32), "mid": ("2b", 2, 16)}  # width, layers, default tokens
SEED = 42


@contextlib.contextmanager
def transformers_sampling() -> Iterator[None]:
    """The library's generate with transformers' own sampling (top-p sort, multinomial): the reference."""
    fast = SamplingOptions.generate_kwargs
    SamplingOptions.generate_kwargs = lambda self, eos, pad, prompt_length: {"generation_config": self.generation_config(eos, pad)}
    try:
        yield
    finally:
        SamplingOptions.generate_kwargs = fast


def transformers_rows(config: Config, items: list[tuple[int, Pair]], args: argparse.Namespace) -> dict[str, tuple[float, int]]:
    """(seconds, generated tokens) of each transformers run."""
    pre = config.precompute
    encoder = QwenVLEncoder.from_folder(config.path(pre.vlm), dtype=DTYPES[pre.dtype]).to(args.device)
    batches = [items[i:i + args.batch] for i in range(0, len(items), args.batch)]
    tokens: dict[str, int] = {}

    def run(name: str, groups: list[list[tuple[int, Pair]]]) -> Callable[[], None]:
        def go() -> None:
            tokens[name] = sum(len(s.token_ids) for group in groups for s in generate_batch(encoder, group, pre, SEED))
        return go

    sampling = sampling_options(pre, SEED)
    prepared = [encoder.prepare([VLMRequest(instruction_for(pre.instructions, SEED, i), [pair.image]) for i, pair in group],
                                pre.min_pixels, pre.max_pixels, pre.max_new_tokens) for group in batches]

    def bare() -> None:
        tokens["bare generate"] = 0
        for inputs in prepared:
            prompt = inputs["input_ids"].shape[1]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(SEED)
                out = encoder.model.generate(**inputs, **sampling.generate_kwargs(encoder.eos_token_id, encoder.pad_token_id, prompt))
            tokens["bare generate"] += int(out[:, prompt:].numel())

    batched, reference = f"batched ({args.batch})", f"batched ({args.batch}), HF sampling"

    def with_transformers_sampling() -> None:
        with transformers_sampling():
            run(reference, batches)()

    seconds = timed({"unbatched": run("unbatched", [[item] for item in items]), batched: run(batched, batches),
                     "bare generate": bare, reference: with_transformers_sampling}, args.repeats, args.device)
    return {name: (seconds[name], tokens[name]) for name in seconds}


def _vllm_phase(phase: str, config: Config, requests: list[dict[str, Any]], repeats: int, results: Any) -> None:
    """In its own process, as the backend runs it: one engine, warmed up, then all requests per call."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from training.vllm_stage_a import answer_rows, engine_arguments, prompt_ids, sampling_arguments

    started = time.perf_counter()
    llm = LLM(**engine_arguments(config, **(POOLING if phase == "states" else {})))
    startup = time.perf_counter() - started
    if phase == "tokens":
        tokenizer = AutoTokenizer.from_pretrained(str(config.path(config.precompute.vlm)))
        prompts = [TokensPrompt(prompt_token_ids=prompt_ids(tokenizer, r["instruction"]), multi_modal_data={"image": r["image"]})
                   for r in requests]
        params = [SamplingParams(**sampling_arguments(config), seed=SEED + i) for i in range(len(requests))]
        outputs: list[Any] = []

        def run() -> None:
            outputs[:] = llm.generate(prompts, params, use_tqdm=False)

        seconds = timed({phase: run}, repeats, "cpu")[phase]
        results.put((startup, seconds, [list(o.prompt_token_ids) for o in outputs], [list(o.outputs[0].token_ids) for o in outputs]))
        return
    prompts = [TokensPrompt(prompt_token_ids=r["prompt_ids"] + r["token_ids"], multi_modal_data={"image": r["image"]}) for r in requests]

    def run() -> None:
        for request, output in zip(requests, llm.encode(prompts, pooling_task="token_embed", use_tqdm=False), strict=True):
            answer_rows(output.outputs.data, len(request["token_ids"]))

    results.put((startup, timed({phase: run}, repeats, "cpu")[phase], None, None))


POOLING = {"runner": "pooling", "convert": "embed", "pooler_config": {"task": "token_embed", "use_activation": False}}


def states_as_in_0_2(llm: Any, prompts: list[Any], lengths: list[int]) -> list[torch.Tensor]:
    """The 0.2 states phase on one chunk: one LLM.encode, each answer's rows kept as a view of its output."""
    from training.vllm_stage_a import answer_rows

    return [answer_rows(o.outputs.data, n) for o, n in zip(llm.encode(prompts, pooling_task="token_embed", use_tqdm=False),
                                                           lengths, strict=True)]


def resident_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, KiB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def _states_memory(streamed: bool, config: Config, requests: list[dict[str, Any]], results: Any) -> None:
    """In its own process: a pooling engine, warmed up on two requests; then one chunk. Reports (peak RSS growth,
    bytes held by the kept states)."""
    import gc

    from vllm import LLM
    from vllm.inputs import TokensPrompt

    from training.vllm_stage_a import answer_states, engine_arguments

    llm = LLM(**engine_arguments(config, **POOLING))
    prompts = [TokensPrompt(prompt_token_ids=r["prompt_ids"] + r["token_ids"], multi_modal_data={"image": r["image"]})
               for r in requests]
    lengths = [len(r["token_ids"]) for r in requests]

    def states(count: int) -> list[torch.Tensor]:
        if streamed:
            return answer_states(llm.llm_engine, prompts[:count], lengths[:count], DTYPES[config.precompute.storage_dtype])
        return states_as_in_0_2(llm, prompts[:count], lengths[:count])

    states(2)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident size starts again from the current one
    resident = resident_kib("VmRSS")
    kept = states(len(prompts))
    peak = resident_kib("VmHWM") - resident
    held = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept}.values())
    results.put((peak * 1024, held))


def states_memory(config: Config, items: list[tuple[int, Pair]], tokens: int, side: int) -> None:
    from transformers import AutoTokenizer

    from training.vllm_stage_a import prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(str(config.path(config.precompute.vlm)))
    answer = (tokenizer("A detailed photo of a red brick house by a lake, with trees.").input_ids * tokens)[:tokens]
    requests = [{"prompt_ids": prompt_ids(tokenizer, instruction_for(config.precompute.instructions, SEED, i)),
                 "token_ids": answer, "image": pair.image} for i, pair in items]
    context = multiprocessing.get_context("spawn")
    figures = {}
    for name, streamed in (("before (0.2: encode, views)", False), ("after (streamed answer rows)", True)):
        results = context.Queue()
        process = context.Process(target=_states_memory, args=(streamed, config, requests, results))
        process.start()
        figures[name] = results.get()
        process.join()
    (peak_before, held_before), (peak_after, held_after) = figures.values()
    print(f"  vLLM states phase, host RAM for one chunk of {len(items)} requests ({side}x{side} px, {tokens} answer "
          f"tokens, storage {config.precompute.storage_dtype}):")
    print(f"  {'run':32} {'peak RSS growth':>16} {'kept states':>12}")
    for name, (peak, held) in figures.items():
        print(f"  {name:32} {peak / 2**20:12.1f} MiB {held / 2**20:8.1f} MiB")
    print(f"  {'ratio before / after':32} {peak_before / max(peak_after, 1):15.1f}x {held_before / held_after:11.1f}x")


def vllm_rows(config: Config, items: list[tuple[int, Pair]], args: argparse.Namespace) -> tuple[dict[str, tuple[float, int]], str]:
    context = multiprocessing.get_context("spawn")
    requests = [{"instruction": instruction_for(config.precompute.instructions, SEED, i), "image": pair.image} for i, pair in items]
    rows, starts = {}, []
    for phase in ("tokens", "states"):
        results = context.Queue()
        process = context.Process(target=_vllm_phase, args=(phase, config, requests, args.repeats, results))
        process.start()
        startup, seconds, prompts, answers = results.get()
        process.join()
        if phase == "tokens":
            from transformers import AutoTokenizer

            from training.vllm_stage_a import prompt_ids

            tokenizer = AutoTokenizer.from_pretrained(str(config.path(config.precompute.vlm)))
            for request, answer in zip(requests, answers, strict=True):
                request.update(prompt_ids=prompt_ids(tokenizer, request["instruction"]), token_ids=answer)
        starts.append(f"{phase} {startup:.1f} s")
        rows[f"vLLM {phase}"] = (seconds, sum(len(r["token_ids"]) for r in requests))
    rows["vLLM tokens + states"] = (rows["vLLM tokens"][0] + rows["vLLM states"][0], rows["vLLM tokens"][1])
    return rows, "engine start: " + ", ".join(starts)


def bench(size: str, args: argparse.Namespace, folder: Path) -> None:
    width, layers, default_tokens = SIZES[size]
    tokens = args.tokens or default_tokens
    make_qwen2vl(folder, width=width, text_layers=layers, vision_layers=layers, dtype=DTYPES[args.dtype])
    config = Config()
    config.precompute.vlm, config.precompute.dtype, config.precompute.max_new_tokens = str(folder), args.dtype, tokens
    config.precompute.vllm = {"enforce_eager": True} if args.device == "cpu" else {}  # torch.compile: minutes on a 2-core CPU
    items = [(i, Pair(str(i), Image.new("RGB", (args.side, args.side), (37 * i % 256, 120, 200 - 11 * i % 200)), ""))
             for i in range(args.requests)]
    if args.states_memory:
        print(f"\n[{size}] Qwen2-VL {width} widths, {layers or 2} layers ({args.dtype}, {args.device})")
        return states_memory(config, items, tokens, args.side)
    rows = transformers_rows(config, items, args)
    note = "vLLM: not installed here (run in .dev/venv-vllm, scripts/bootstrap_vllm.sh)"
    if importlib.util.find_spec("vllm") is not None:
        more, note = vllm_rows(config, items, args)
        rows.update(more)
    print(f"\n[{size}] Qwen2-VL {width} widths, {layers or 2} layers ({args.dtype}, {args.device}, {torch.get_num_threads()} threads); "
          f"{args.requests} requests, <= {tokens} tokens each")
    print(f"  {'run':32} {'seconds':>8} {'samples/s':>10} {'tokens/s':>9} {'vs unbatched':>13}")
    unbatched = rows["unbatched"][1] / rows["unbatched"][0]
    for name, (seconds, count) in rows.items():
        rate = count / seconds
        print(f"  {name:32} {seconds:8.2f} {args.requests / seconds:10.2f} {rate:9.1f} {rate / unbatched:12.2f}x")
    print(f"  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="fp32")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=0, help="answer length cap (default: tiny 32, mid 16)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--side", type=int, default=224, help="image side in pixels")
    parser.add_argument("--states-memory", action="store_true",
                        help="instead: host RAM of vLLM's states phase for one chunk of --requests, before and after streaming")
    args = parser.parse_args()
    if args.device == "cpu":  # vLLM's CPU build: the engine core in-process (starts in half the time), a small KV cache
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    print(f"bench_stage_a: torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            bench(size, args, Path(tmp) / size)


if __name__ == "__main__":
    main()
