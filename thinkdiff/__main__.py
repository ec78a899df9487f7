"""Command line: ``python -m thinkdiff <command>``.

  convert-aligner IN OUT      release checkpoint (.pth) -> this pack's .safetensors, reading tensors only
  inspect-aligner FILE        print an aligner file's widths and metadata
  extract-vision BLIP2 OUT    cut the vision tower out of a local BLIP-2 folder (ThinkDiff-CLIP's image encoder)
  doctor [--comfyui PATH]     which model files each workflow needs, which are missing, whether widths fit (--fix: fetch them)
  setup (--variant V | --workflow NAME | --model NAME) [--comfyui PATH] [--repair]
                              fetch what the doctor reports missing from the Hugging Face hub (the only networked command)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import doctor
from .aligner_files import convert_release_checkpoint, load_aligner_weights
from .dtypes import DTYPES
from .errors import ThinkDiffError

SETUP_NOT_HERE = ("the setup tool (hub_setup/) is not in this copy of the pack: the Comfy Registry archive leaves download "
                  "code out. Clone https://github.com/comfyui-thinkdiff/ComfyUI-ThinkDiff anywhere and run "
                  "`python -m thinkdiff setup --comfyui /path/to/ComfyUI ...` in it, or fetch by hand (docs/models.md).")


def convert_aligner(args: argparse.Namespace) -> None:
    extra = {k: v for k, v in (("variant", args.variant), ("source_model", args.source_model)) if v}
    weights = convert_release_checkpoint(args.source, args.target, **extra)
    print(f"wrote {args.target}: {weights.describe()}")


def inspect_aligner(args: argparse.Namespace) -> None:
    weights = load_aligner_weights(args.file)
    print(weights.describe())
    for key, value in sorted(weights.metadata.items()):
        print(f"  {key}: {value}")


def extract_vision(args: argparse.Namespace) -> None:
    from .vision_extract import extract_blip2_vision

    path = extract_blip2_vision(args.folder, args.target, dtype=DTYPES[args.dtype])
    print(f"wrote {path} ({path.stat().st_size / 10**6:,.1f} MB)")


def setup(args: argparse.Namespace) -> int:
    """Hand over to hub_setup/ (deferred: the rest of this command line, and ComfyUI, never import it)."""
    try:
        from hub_setup.fetch import run
    except ModuleNotFoundError as e:
        if e.name != "hub_setup":
            raise
        raise ThinkDiffError(SETUP_NOT_HERE) from None
    return run(args)


def run_doctor(args: argparse.Namespace) -> int:
    return setup(args) if args.fix else doctor.run(args)


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repair", action="store_true", help="replace present files that are damaged (never done otherwise)")
    parser.add_argument("--cache", type=Path, help="where downloads wait until whole and verified (default ComfyUI/.thinkdiff_cache)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m thinkdiff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert-aligner", help="convert a ThinkDiff release checkpoint to .safetensors")
    convert.add_argument("source", help="thinkdiff_lvlm.pth / thinkdiff_clip.pth (or any aligner file)")
    convert.add_argument("target", help="output .safetensors, e.g. ComfyUI/models/thinkdiff/thinkdiff_lvlm.safetensors")
    convert.add_argument("--variant", choices=["lvlm", "clip"], help="override the variant guessed from the input width")
    convert.add_argument("--source-model", help="the model whose features it aligns (stored in the metadata)")
    convert.set_defaults(run=convert_aligner)
    inspect = commands.add_parser("inspect-aligner", help="show an aligner file's widths and metadata")
    inspect.add_argument("file", help="an aligner file (.safetensors, or a release .pth holding only tensors)")
    inspect.set_defaults(run=inspect_aligner)
    vision = commands.add_parser("extract-vision", help="save BLIP-2's vision tower as a ThinkDiff vision file")
    vision.add_argument("folder", help="a local Salesforce/blip2-flan-t5-xxl folder")
    vision.add_argument("target", help="output, e.g. ComfyUI/models/thinkdiff/blip2_vision.safetensors")
    vision.add_argument("--dtype", choices=list(DTYPES), default="fp16", help="storage precision (default fp16)")
    vision.set_defaults(run=extract_vision)
    doctor_parser = commands.add_parser("doctor", help="check a ComfyUI install's model files for each workflow (downloads nothing)")
    doctor.add_arguments(doctor_parser)
    doctor_parser.add_argument("--fix", action="store_true", help="fetch what is missing for the checked workflows (as setup)")
    add_setup_arguments(doctor_parser)
    doctor_parser.set_defaults(run=run_doctor, variant=None, model=[])
    setup_parser = commands.add_parser("setup", help="fetch the model files a variant, workflow or model needs (Hugging Face hub)")
    doctor.add_arguments(setup_parser)
    setup_parser.add_argument("--variant", choices=["lvlm", "clip", "all"],
                              help="lvlm / clip: that variant's Flux workflows (the paper's); all: every workflow")
    setup_parser.add_argument("--model", action="append", default=[], help="one catalogue entry (as a loader error names it); repeatable")
    add_setup_arguments(setup_parser)
    setup_parser.set_defaults(run=setup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0  # a command may return an exit status (doctor: 1 = not ready)
    except ThinkDiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
