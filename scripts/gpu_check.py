"""The VLM's low-VRAM paths on a real GPU, through ComfyUI's own memory manager, printed as one table.

    bash scripts/gpu_check.sh [--dry-run] [--log FILE]     (sets up ComfyUI and the packages, then runs this)

A random Qwen2-VL-7B of real size (drawn on the GPU, saved as a Hugging Face folder: nothing is downloaded) is loaded by
the VLM loader's own code (``vlm_patcher``) in each weight format and thinks as the Think node does (``think``: ComfyUI's
``load_models_gpu`` with the think's working memory reserved). Per format:

  stored GB     what ComfyUI accounts for the model (the bytes it stores)
  peak GB       peak GPU memory above the baseline during a think of 2 one-megapixel images and 128 tokens
  think s       that think's wall time (loading included); ms/tok: its decode steps
  bound         ms/token if every step read the language model's weights once at the measured memory bandwidth
  unload MB     GPU memory above the baseline after ComfyUI unloads the VLM (goal: under 300 MB)
  streamed      a think (32 tokens) with only 6 GB of the GPU free (the rest held by a ballast tensor), so that ComfyUI
                loads part of the model and streams the rest per layer: s, ms/token and the GB ComfyUI had loaded
                (default and fp8 only: bitsandbytes models cannot stream, and are refused when they do not fit)
  after Cancel  Cancel pressed half-way through a token: the tokens finished after the press (goal: 0, the think stops
                with the token in flight) and the milliseconds from the press to the stop

``--dry-run`` runs every step on the CPU with a tiny model (CI runs it): GPU-memory columns show ``-``, and the
streamed think has no ballast to hold (ComfyUI always loads whole on the CPU; tests/test_offload_proxy.py drives its
partial loads there).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.comfy_pack import mount  # noqa: E402
from tests.support.tiny_models import TINY_64, make_qwen2vl  # noqa: E402
from thinkdiff.weight_formats import WEIGHT_FORMATS  # noqa: E402

GB = 10**9
STREAM_BUDGET = 6 * GB
FULL = {"width": "7b", "tokens": 128, "stream_tokens": 32, "image_px": 1024}
DRY = {"width": TINY_64, "tokens": 12, "stream_tokens": 6, "image_px": 112}
PROMPT = "Describe both pictures, then write one diffusion prompt that combines them."


@dataclass
class Row:
    weights: str
    stored_gb: float
    peak_gb: float | None = None
    think_s: float = 0.0
    ms_per_token: float = 0.0
    bound_ms: float | None = None
    unload_mb: float | None = None
    streamed: str = "-"
    cancel: str = "-"


def cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if cuda(device) else 0


def settle(device: torch.device) -> None:
    gc.collect()
    if cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def bandwidth(device: torch.device) -> float | None:
    """Bytes per second a device-to-device copy reads (the bound of a decode step that reads every weight once)."""
    if not cuda(device):
        return None
    source = torch.empty(2 * GB, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(5):
        target.copy_(source)
    torch.cuda.synchronize(device)
    return 5 * source.numel() / (time.perf_counter() - started)


def language_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights a decode step reads: everything but the vision tower."""
    return sum(t.numel() * t.element_size() for name, t in model.state_dict(keep_vars=True).items()
               if ".visual." not in f".{name}")


class Timed:
    """A token callback that keeps the wall time of every token, and how much of the model ComfyUI had loaded."""

    def __init__(self, patcher: object | None = None) -> None:
        self.patcher = patcher
        self.times: list[float] = []
        self.loaded: list[int] = []

    def __call__(self, step: int, total: int, ids: torch.Tensor) -> None:
        self.times.append(time.perf_counter())
        if self.patcher is not None:
            self.loaded.append(self.patcher.loaded_size())

    def ms_per_token(self) -> float:
        return 1000 * (self.times[-1] - self.times[0]) / max(len(self.times) - 1, 1)


@contextlib.contextmanager
def ballast(device: torch.device, free_bytes: int) -> Iterator[None]:
    """Hold all of the GPU's memory but ``free_bytes`` (what ComfyUI then sees free)."""
    free, _ = torch.cuda.mem_get_info(device)
    held = torch.empty(max(free - free_bytes, 0), dtype=torch.uint8, device=device)
    try:
        yield
    finally:
        del held
        settle(device)


class Check:
    def __init__(self, dry_run: bool, folder: Path) -> None:
        self.sizes = DRY if dry_run else FULL
        self.pack = mount(cpu=dry_run)
        self.mm = self.pack.vlm_nodes.mm
        self.device = self.mm.get_torch_device()
        self.folder = folder
        self.bandwidth = bandwidth(self.device)
        px = self.sizes["image_px"]
        images = [Image.radial_gradient("L").convert("RGB").resize((px, px)), Image.linear_gradient("L").convert("RGB").resize((px, px))]
        self.request = self.pack.vlm.VLMRequest(PROMPT, images)

    def sampling(self, tokens: int) -> object:
        return self.pack.sampling_options.SamplingOptions(max_new_tokens=tokens)

    def think(self, patcher: object, tokens: int, on_token: object) -> float:
        started = time.perf_counter()
        self.pack.vlm_nodes.think(patcher, self.request, self.sampling(tokens), 3136, 12845056, on_token)
        return time.perf_counter() - started

    def row(self, weights: str) -> Row:
        settle(self.device)
        baseline = allocated(self.device)
        patcher = self.pack.vlm_nodes.vlm_patcher(self.folder, self.device, torch.bfloat16, weights)
        row = Row(weights, patcher.model_size() / GB)
        if cuda(self.device):
            torch.cuda.reset_peak_memory_stats(self.device)
        timed = Timed()
        row.think_s = self.think(patcher, self.sizes["tokens"], timed)
        row.ms_per_token = timed.ms_per_token()
        if cuda(self.device):
            row.peak_gb = (torch.cuda.max_memory_allocated(self.device) - baseline) / GB
        if self.bandwidth:
            row.bound_ms = 1000 * language_bytes(patcher.model) / self.bandwidth
        row.cancel = self.cancel(patcher, row.ms_per_token)
        self.mm.unload_all_models()
        settle(self.device)
        if cuda(self.device):
            row.unload_mb = (allocated(self.device) - baseline) / 1e6
        if not self.pack.weight_formats.is_bitsandbytes(weights):
            row.streamed = self.streamed(patcher)
        del patcher
        return row

    def cancel(self, patcher: object, ms_per_token: float) -> str:
        """Press Cancel half a token after the third token: the tokens finished after the press (0: the think stopped
        with the token in flight) and the time from the press to the stop."""
        pressed: list[float] = []
        press = threading.Timer(ms_per_token / 2000, lambda: (pressed.append(time.perf_counter()),
                                                             self.mm.interrupt_current_processing(True)))
        finished: list[float] = []

        def on_token(step: int, total: int, ids: torch.Tensor) -> None:
            finished.append(time.perf_counter())
            if step == 3:
                press.start()

        try:
            self.think(patcher, self.sizes["tokens"], on_token)
        except self.mm.InterruptProcessingException:
            stopped = time.perf_counter()
        else:
            raise RuntimeError("Cancel did not stop the think")
        finally:
            press.cancel()
            self.mm.interrupt_current_processing(False)
        after = sum(t > pressed[0] for t in finished)
        return f"{after} ({1000 * (stopped - pressed[0]):.0f} ms)"

    def streamed(self, patcher: object) -> str:
        """A think with only 6 GB of the GPU free: how much ComfyUI loaded, and the speed of the rest streamed."""
        timed = Timed(patcher)
        try:
            with ballast(self.device, STREAM_BUDGET) if cuda(self.device) else contextlib.nullcontext():
                seconds = self.think(patcher, self.sizes["stream_tokens"], timed)
        except Exception as e:  # a failure is a finding: print it in the table
            return f"failed: {type(e).__name__}: {e}"[:120]
        finally:
            self.mm.unload_all_models()
            settle(self.device)
        return (f"{seconds:.1f} s, {timed.ms_per_token():.0f} ms/tok, {max(timed.loaded) / GB:.2f} of "
                f"{patcher.model_size() / GB:.2f} GB loaded")


def figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with a tiny model")
    parser.add_argument("--formats", default=",".join(WEIGHT_FORMATS))
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = DRY if args.dry_run else FULL
        device = "cpu" if args.dry_run else "cuda"
        folder = make_qwen2vl(Path(tmp) / "qwen2vl", width=sizes["width"], dtype=torch.bfloat16, device=device)
        settle(torch.device(device))
        check = Check(args.dry_run, folder)
        name = torch.cuda.get_device_name(check.device) if cuda(check.device) else "CPU (dry run)"
        print(f"ThinkDiff GPU check: {name}, random Qwen2-VL {'7B' if sizes is FULL else 'tiny'}, 2 images of {sizes['image_px']}² px, "
              f"{sizes['tokens']} tokens; torch {torch.__version__}; bandwidth "
              f"{figure(check.bandwidth and check.bandwidth / GB, '.0f')} GB/s; model saved in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        print("| weights | stored GB | peak GB | think s | ms/tok | bound ms/tok | unload MB | streamed (6 GB free) "
              "| tokens after Cancel |\n|---|---|---|---|---|---|---|---|---|", flush=True)
        for weights in args.formats.split(","):
            try:
                row = check.row(weights)
            except Exception as e:  # bitsandbytes absent, refused...: a finding for the table
                print(f"| {weights} | failed: {type(e).__name__}: {str(e)[:160]} |||||||| ", flush=True)
                continue
            print(f"| {row.weights} | {row.stored_gb:.4g} | {figure(row.peak_gb, '.2f')} | {row.think_s:.1f} | "
                  f"{row.ms_per_token:.1f} | {figure(row.bound_ms, '.1f')} | {figure(row.unload_mb, '.0f')} | "
                  f"{row.streamed} | {row.cancel} |", flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
