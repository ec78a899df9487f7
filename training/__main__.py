"""Command line: ``python -m training <command> --config run.toml [--set section.key=value ...]``.

  precompute   LVLM stage A: Qwen2-VL answers, generated-token features -> [precompute] features_dir
  align        train the aligner ([run] variant lvlm: on the features; clip: on image-text pairs); resumes
  export       the latest (or --checkpoint) aligner -> .safetensors for ComfyUI/models/thinkdiff
  plot         redraw loss.png from metrics.csv

Launch on several GPUs or nodes with ``accelerate launch -m training align --config ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from thinkdiff.errors import ThinkDiffError

from .config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["precompute", "align", "export", "plot"])
    parser.add_argument("--config", type=Path, help="the run's TOML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (TOML syntax for the value), repeatable")
    parser.add_argument("--output", type=Path, help="export: the .safetensors file to write (default: RUN/aligner.safetensors)")
    parser.add_argument("--checkpoint", type=Path, help="export: a checkpoint folder (default: the latest)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        run_dir = config.path(config.run.output_dir)
        if args.command == "precompute":
            from .precompute import precompute

            print(f"features in {precompute(config)}")
        elif args.command == "align":
            from .trainer import train

            print(f"run folder {train(config)}")
        elif args.command == "export":
            from .export import export_aligner

            print(f"wrote {export_aligner(run_dir, args.output or run_dir / 'aligner.safetensors', args.checkpoint)}")
        else:
            from .metrics import plot_loss

            print(f"wrote {plot_loss(run_dir / 'metrics.csv', run_dir / 'loss.png')}")
    except ThinkDiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        end_process_group()
    return 0


def end_process_group() -> None:
    """Close the group Accelerate opened, if any: a gloo group left to the interpreter's exit can abort the process
    ("terminate called without an active exception", exit -6) instead of letting it return its code."""
    distributed = sys.modules.get("torch.distributed")  # a command that never imported it opened no group
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
