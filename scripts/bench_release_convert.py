"""Peak memory of reading a release checkpoint, measured in one run.

    .dev/venv/bin/python scripts/bench_release_convert.py [--variant lvlm|clip] [--with-optimizer]

Writes a real-size file laid out as the original's (thinkdiff-reference.md 2.4): the aligner in fp32 plus the frozen
T5-XXL embedding [32128, 4096] in bf16 (plus, with --with-optimizer, AdamW moments for the aligner), then measures the
peak resident memory of a fresh process that converts it (`convert_release_checkpoint`) and of one that loads it
(`load_aligner_weights`), each minus a process that only imports the same modules. Prints each as a ratio of the file
size (the goal: at most about 2x).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IN_DIM = {"lvlm": 3584, "clip": 1408}
T5_VOCAB, T5_WIDTH = 32128, 4096


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM: per address space, so unlike ru_maxrss not inherited from a parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _child(task: str, src: str, dst: str, queue) -> None:
    from thinkdiff.aligner_files import convert_release_checkpoint, load_aligner_weights

    if task == "convert":
        convert_release_checkpoint(src, dst)
    elif task == "load":
        load_aligner_weights(src)
    queue.put(_peak_mib())


def peak(task: str, src: Path, dst: Path) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(task, str(src), str(dst), queue))
    process.start()
    value = queue.get()
    process.join()
    return value


def write_release(path: Path, variant: str, with_optimizer: bool) -> None:
    import torch

    from thinkdiff.aligner import Aligner

    aligner = Aligner(IN_DIM[variant], T5_WIDTH, T5_WIDTH)
    embedding = torch.randn(T5_VOCAB, T5_WIDTH, dtype=torch.bfloat16)
    names = {"in_proj": "mm_projector.0", "out_proj": "mm_projector.2", "norm": "mm_projector.3"}
    model = {f"{names[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in aligner.state_dict().items()}
    model["language_model.decoder.embed_tokens.weight"] = embedding
    if variant == "clip":
        model["language_model.encoder.embed_tokens.weight"] = embedding
    checkpoint = {"model": model, "config": {"run": {"init_lr": 1e-4}}, "scaler": {"scale": 65536.0}, "epoch": 4}
    if with_optimizer:
        checkpoint["optimizer"] = {"state": {i: {"step": torch.tensor(25000.0), "exp_avg": torch.zeros_like(p),
                                                 "exp_avg_sq": torch.zeros_like(p)} for i, p in enumerate(aligner.parameters())},
                                   "param_groups": [{"lr": 1e-4, "params": list(range(5))}]}
    torch.save(checkpoint, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=list(IN_DIM), default="lvlm")
    parser.add_argument("--with-optimizer", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "release.pth", Path(tmp) / "converted.safetensors"
        write_release(src, args.variant, args.with_optimizer)
        size = src.stat().st_size / 2**20
        baseline = peak("import", src, dst)
        print(f"{args.variant} release file {size:.0f} MiB{' (with AdamW moments)' if args.with_optimizer else ''}; "
              f"a process importing the modules peaks at {baseline:.0f} MiB")
        for task in ("convert", "load"):
            extra = peak(task, src, dst) - baseline
            print(f"  {task:8s} +{extra:5.0f} MiB = {extra / size:.2f}x the file size")
        print(f"  converted file {dst.stat().st_size / 2**20:.0f} MiB (the aligner alone, fp32)")


if __name__ == "__main__":
    main()
