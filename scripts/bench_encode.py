"""Benchmark: ThinkDiff encode vs bare ``model.generate()`` for the same tokens, in one run.

    python scripts/bench_encode.py --width tiny
    python scripts/bench_encode.py --width 7b --text-layers 2 --vision-layers 2
    python scripts/bench_encode.py --width 7b --device cuda --dtype bf16         # full-depth random 7B on a GPU

Compares, on the same prepared inputs and seed (so the same tokens are generated):
  bare      model.generate(**inputs, generation_config=<ours>)          -- the floor
  encode    QwenVLEncoder.generate (final-norm hook captures the rows)  -- what the library does
  node      encode + the node's per-token work (decode text, callback)  -- what the ComfyUI node does
  hf_states model.generate(output_hidden_states=True), rows gathered after -- the naive way to get the same rows
and prints time and peak-memory ratios against ``bare`` (medians over --repeats, runs interleaved). Every run
generates exactly --tokens tokens; whether they equal bare's is reported (random bf16 GPU models have near-flat
logits, where one ulp of kernel nondeterminism changes a sampled token).
Peak memory (CUDA's max_memory_allocated above the loaded model) is reported on a GPU only: on the CPU, freed
blocks are reused, so a process's RSS cannot attribute peaks to runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.tiny_models import qwen2vl_config, qwen2vl_processor  # noqa: E402
from thinkdiff.dtypes import DTYPES  # noqa: E402
from thinkdiff.sampling_options import SamplingOptions  # noqa: E402
from thinkdiff.vlm import QwenVLEncoder, VLMRequest  # noqa: E402


def random_model(args: argparse.Namespace) -> torch.nn.Module:
    """Random weights (N(0, 0.02), unit norms) built directly on the target device."""
    from transformers import Qwen2VLForConditionalGeneration

    config = qwen2vl_config(args.width, args.text_layers, args.vision_layers)
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(config)
    model = model.to_empty(device=args.device).to(DTYPES[args.dtype])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02)
        for name, buffer in model.named_buffers():  # rotary inverse frequencies
            if "inv_freq" in name:
                module = model.get_submodule(name.rsplit(".", 1)[0])
                dim = buffer.numel() * 2
                base = getattr(module, "rope_theta", None) or getattr(module, "theta", 10000.0)
                buffer.copy_(1.0 / (base ** (torch.arange(0, dim, 2, device=buffer.device).float() / dim)))
    return model.eval()


class PeakMemory:
    """Peak CUDA memory above the starting point while the context is open (None on the CPU)."""

    def __init__(self, device: str) -> None:
        self.cuda, self.peak = device.startswith("cuda"), None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            self.start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", choices=["tiny", "2b", "7b"], default="tiny")
    parser.add_argument("--text-layers", type=int)
    parser.add_argument("--vision-layers", type=int)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding (default: the paper's sampling)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    encoder = QwenVLEncoder(random_model(args), qwen2vl_processor(), f"random-{args.width}")
    images = [Image.new("RGB", (448, 448), (40 * i, 90, 200)) for i in range(args.images)]
    prompt = "".join(f"Word {i + 1}: blue, <image>\n\n" for i in range(args.images)) + "Word 3: orange, "
    inputs = encoder.prepare([VLMRequest(prompt, images)])
    options = SamplingOptions(max_new_tokens=args.tokens, greedy=args.greedy)
    config = options.generation_config(encoder.eos_token_id, encoder.pad_token_id)
    prompt_length = inputs["input_ids"].shape[1]
    params = sum(p.numel() for p in encoder.model.parameters())
    print(f"model: random Qwen2-VL {args.width} widths, {params / 1e9:.2f} B params, {args.dtype} on {args.device}; "
          f"prompt {prompt_length} tokens ({args.images} images 448x448), {args.tokens} new tokens, "
          f"{'greedy' if args.greedy else 'T=0.6 top-p=0.9'}, torch {torch.__version__}")

    def bare():
        torch.manual_seed(options.seed)
        return encoder.model.generate(**inputs, generation_config=config)[:, prompt_length:]

    def encode():
        return encoder.generate(inputs, options)[0].token_ids

    def node():
        def on_token(step, total, ids):
            encoder.decode(ids[0])
        return encoder.generate(inputs, options, on_token)[0].token_ids

    def hf_states():
        torch.manual_seed(options.seed)
        out = encoder.model.generate(**inputs, generation_config=config, output_hidden_states=True,
                                     return_dict_in_generate=True)
        rows = torch.cat([out.hidden_states[0][-1][:, -1:]] + [h[-1] for h in out.hidden_states[1:]], dim=1)
        assert rows.shape[1] == args.tokens
        return out.sequences[:, prompt_length:]

    runs = {"bare": bare, "encode": encode, "node": node, "hf_states": hf_states}
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, list[int | None]] = {k: [] for k in runs}
    reference = None
    same = dict.fromkeys(runs, True)
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, run in runs.items():
            with PeakMemory(args.device) as memory:
                started = time.perf_counter()
                ids = run()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - started
            reference = ids.cpu() if reference is None else reference
            same[name] &= torch.equal(ids.cpu().reshape(-1), reference.reshape(-1))
            if repeat:
                times[name].append(elapsed)
                peaks[name].append(memory.peak)
    base_time = statistics.median(times["bare"])
    print(f"{'run':10} {'time s':>8} {'vs bare':>8} {'peak MiB':>9} {'vs bare':>8}  same tokens as bare")
    for name in runs:
        t = statistics.median(times[name])
        memory = "        -        -"
        if peaks[name][0] is not None:
            p, base_peak = statistics.median(peaks[name]), statistics.median(peaks["bare"])
            memory = f"{p / 2**20:9.1f} {p / max(base_peak, 1):8.3f}"
        print(f"{name:10} {t:8.3f} {t / base_time:8.3f} {memory}  {same[name]}")


if __name__ == "__main__":
    main()
