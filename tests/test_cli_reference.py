"""``python -m thinkdiff``'s parser: docs/commands.md is what scripts/make_cli_reference.py writes from it, and the
arguments parse as that page says."""

import importlib.util
from pathlib import Path

import pytest

from tests.support.paths import REPO
from thinkdiff.__main__ import build_parser
from thinkdiff.__main__ import main as cli


def test_the_command_reference_is_current():
    spec = importlib.util.spec_from_file_location("make_cli_reference", REPO / "scripts" / "make_cli_reference.py")
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    assert (REPO / "docs" / "commands.md").read_text(encoding="utf-8") == writer.reference(), (
        "docs/commands.md is out of date: run `.dev/venv/bin/python scripts/make_cli_reference.py`")


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli([])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: python -m thinkdiff ") and "the following arguments are required: command" in error


def test_the_help_keeps_the_command_lists_layout(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli(["--help"])
    assert stopped.value.code == 0
    assert "\n  convert-aligner IN OUT      release checkpoint (.pth) -> this pack's .safetensors" in capsys.readouterr().out


def test_flags_take_no_value_and_paths_are_paths():
    args = build_parser().parse_args(["setup", "--repair", "--cache", "/tmp/c", "--model", "a", "--model", "b"])
    assert (args.repair, args.cache, args.model, args.command) == (True, Path("/tmp/c"), ["a", "b"], "setup")
    assert build_parser().parse_args(["setup", "--variant", "lvlm"]).model == []
    args = build_parser().parse_args(["doctor"])
    assert (args.repair, args.cache, args.fix, args.workflow, args.comfyui) == (False, None, False, [], None)
