"""Command line: ``python -m thinkdiff <command>``.

  convert-aligner IN OUT      release checkpoint (.pth) -> this pack's .safetensors, reading tensors only
  inspect-aligner FILE        print an aligner file's widths and metadata
  extract-vision BLIP2 OUT    cut the vision tower out of a local BLIP-2 folder (ThinkDiff-CLIP's image encoder)
  doctor [--comfyui PATH]     which model files each workflow needs, which are missing, whether widths fit
"""

from __future__ import annotations

import argparse
import sys

from . import doctor
from .aligner_files import convert_release_checkpoint, load_aligner_weights
from .dtypes import DTYPES
from .errors import ThinkDiffError


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
    print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB)")


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
    inspect.add_argument("file")
    inspect.set_defaults(run=inspect_aligner)
    vision = commands.add_parser("extract-vision", help="save BLIP-2's vision tower as a ThinkDiff vision file")
    vision.add_argument("folder", help="a local Salesforce/blip2-flan-t5-xxl folder")
    vision.add_argument("target", help="output, e.g. ComfyUI/models/thinkdiff/blip2_vision.safetensors")
    vision.add_argument("--dtype", choices=list(DTYPES), default="fp16", help="storage precision (default fp16)")
    vision.set_defaults(run=extract_vision)
    doctor_parser = commands.add_parser("doctor", help="check a ComfyUI install's model files for each workflow (downloads nothing)")
    doctor.add_arguments(doctor_parser)
    doctor_parser.set_defaults(run=doctor.run)
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
