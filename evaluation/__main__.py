"""Command line: ``python -m evaluation cobsat <step> [--config run.toml] [--set section.key=value ...]``.

  samples    N-shot samples from CoBSAT's prompt list -> a .jsonl (works without a config:
             --prompt-list FILE --tasks 1-10 --shots 2,4 --out FILE.jsonl)
  generate   one image per sample (backend diffusers: Qwen2-VL + aligner + Flux; comfyui: a running ComfyUI server);
             resumable; scale out with `accelerate launch -m evaluation cobsat generate ...` and/or [run] shard_index
  judge      CoBSAT's two questions per image (LLaVA-1.5, or Qwen2-VL) and the CLIP metric -> scores/JUDGE/summary.csv
  report     the paper's table layout beside the paper's numbers -> report/JUDGE/cobsat.{md,csv,png}
  selftest   the whole chain on a synthetic stand-in without models (oracle scores 1.0, random near chance)

See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from thinkdiff.errors import ThinkDiffError

STEPS = ("samples", "generate", "judge", "report", "selftest")


def sample_overrides(args: argparse.Namespace) -> list[str]:
    """The sample-selection options as config overrides (a path relative to the working directory)."""
    from .cobsat.samples import parse_numbers

    overrides = [f"data.prompt_list={json.dumps(str(args.prompt_list.resolve()))}"] if args.prompt_list else []
    if args.tasks:
        overrides.append(f"run.tasks={parse_numbers(args.tasks)}")
    if args.shots:
        overrides.append(f"run.shots={parse_numbers(args.shots)}")
    if args.samples_per_task:
        overrides.append(f"run.samples_per_task={args.samples_per_task}")
    return overrides


def run_step(args: argparse.Namespace) -> None:
    from .cobsat.config import load_config

    if args.step == "selftest":
        from .cobsat.selftest import selftest

        if not selftest(args.out or Path("cobsat_selftest"), args.samples_per_task or 1000):
            raise ThinkDiffError("the self-test failed (see above)")
        return
    config = load_config(args.config, args.overrides + sample_overrides(args))
    if args.step == "samples":
        from .cobsat.samples import build_samples, write_samples

        if not config.data.prompt_list:
            raise ThinkDiffError("give --prompt-list (CoBSAT's load_datasets/prompts_list_default.json) or [data] prompt_list")
        run = config.run
        samples = build_samples(config.path(config.data.prompt_list), run.tasks, run.shots, run.samples_per_task)
        print(f"wrote {len(samples)} samples to {write_samples(samples, args.out or config.samples_file)}")
    elif args.step == "generate":
        from .cobsat.generate import generate

        print(f"images in {generate(config)}")
    elif args.step == "judge":
        from .cobsat.judge import judge

        print(f"wrote {judge(config)}")
    else:
        from .cobsat.report import report

        print("wrote " + ", ".join(map(str, report(config))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["cobsat"])
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--config", type=Path, help="the run's TOML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (TOML syntax for the value), repeatable")
    parser.add_argument("--prompt-list", type=Path, help="CoBSAT's load_datasets/prompts_list_default.json ([data] prompt_list)")
    parser.add_argument("--tasks", help="task ids, e.g. 1-10 or 1,2 ([run] tasks)")
    parser.add_argument("--shots", help="shot counts, e.g. 2,4 ([run] shots)")
    parser.add_argument("--samples-per-task", type=int, help="prompt-list entries per task, at most 1000 ([run] samples_per_task)")
    parser.add_argument("--out", type=Path, help="samples: the .jsonl to write; selftest: its folder (default cobsat_selftest)")
    args = parser.parse_args(argv)
    try:
        run_step(args)
    except ThinkDiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
