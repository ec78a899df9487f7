"""Write docs/commands.md, the reference of ``python -m thinkdiff``, from the command's own parser.

    .dev/venv/bin/python scripts/make_cli_reference.py

Each command with its help and a table of its arguments (value, default, help); tests/test_cli_reference.py checks that
the committed page is what this writes, so the page stays true when an option changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thinkdiff.__main__ import build_parser

PAGE = Path(__file__).resolve().parents[1] / "docs" / "commands.md"


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "flag"
    if action.choices:
        return " / ".join(f"`{choice}`" for choice in action.choices)
    return "path" if action.type is Path else "text"


def _default(action: argparse.Action) -> str:
    return "" if action.default in (None, False, []) or action.nargs == 0 else f"`{action.default}`"


def _rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = ", ".join(f"`{option}`" for option in action.option_strings) or f"`{action.dest.upper()}`"
        repeat = " (repeatable)" if isinstance(action, argparse._AppendAction) else ""
        rows.append(f"| {name} | {_value(action)}{repeat} | {_default(action)} | {action.help or ''} |")
    return rows


def reference() -> str:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    lines = [f"# Command reference: `{parser.prog}`", "",
             "Written from the command's own parser by `scripts/make_cli_reference.py` (tests/test_cli_reference.py checks "
             "that it is current). Run the commands in `ComfyUI/custom_nodes/ComfyUI-ThinkDiff`.", "",
             "```text", (parser.description or "").strip(), "```"]
    for name, sub in commands.choices.items():
        lines += ["", f"## `{parser.prog} {name}`", "", f"{helps[name]}.", "",
                  "| argument | value | default | what |", "|---|---|---|---|", *_rows(sub)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    PAGE.write_text(reference(), encoding="utf-8")
    print(f"wrote {PAGE}")
