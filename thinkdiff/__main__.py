"""Command line: ``python -m thinkdiff <command>``.

  convert-aligner IN OUT   release checkpoint (.pth) -> this pack's .safetensors, reading tensors only
  inspect-aligner FILE     print an aligner file's widths and metadata
"""

from __future__ import annotations

import argparse
import sys

from .aligner_files import convert_release_checkpoint, load_aligner_weights
from .errors import ThinkDiffError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thinkdiff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert-aligner", help="convert a ThinkDiff release checkpoint to .safetensors")
    convert.add_argument("source", help="thinkdiff_lvlm.pth / thinkdiff_clip.pth (or any aligner file)")
    convert.add_argument("target", help="output .safetensors, e.g. ComfyUI/models/thinkdiff/thinkdiff_lvlm.safetensors")
    convert.add_argument("--variant", choices=["lvlm", "clip"], help="override the variant guessed from the input width")
    convert.add_argument("--source-model", help="the model whose features it aligns (stored in the metadata)")
    inspect = commands.add_parser("inspect-aligner", help="show an aligner file's widths and metadata")
    inspect.add_argument("file")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert-aligner":
            extra = {k: v for k, v in (("variant", args.variant), ("source_model", args.source_model)) if v}
            weights = convert_release_checkpoint(args.source, args.target, **extra)
            print(f"wrote {args.target}: {weights.describe()}")
        else:
            weights = load_aligner_weights(args.file)
            print(weights.describe())
            for key, value in sorted(weights.metadata.items()):
                print(f"  {key}: {value}")
    except ThinkDiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
