"""Comfy Registry / ComfyUI-Manager readiness: pyproject spec, requirements, scanner-clean shipped code, comfy-cli validate and
the published archive's contents (no ComfyUI server needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from PIL import Image

from tests.support.paths import REPO
from tests.support.shipping import (
    copy_clone,
    declared_node_ids,
    scan_shipped_code,
    scan_source,
    shipped_python_files,
)
from thinkdiff import __version__
from thinkdiff.doctor import shipped_workflows

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
BIN = Path(sys.executable).parent


def test_pyproject_meets_the_registry_spec():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    name = project["name"]
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}", name) and "comfyui" not in name.lower()
    assert SEMVER.match(project["version"]) and project["version"] == __version__
    assert (REPO / project["license"]["file"]).is_file()
    assert "MIT License" in (REPO / project["license"]["file"]).read_text()
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    icon_url = comfy["Icon"]
    assert icon_url.startswith("https://raw.githubusercontent.com/") and icon_url.endswith(".png")
    icon = Image.open(REPO / icon_url.split("/main/", 1)[1])  # the URL serves this repository file once pushed
    assert icon.width == icon.height <= 400


def test_requirements_are_minimal():
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line]
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}
    assert not names & {"torch", "torchvision", "torchaudio", "comfyui"}, "ComfyUI provides torch; listing it breaks CUDA installs"
    assert not [r for r in requirements if re.search(r"(<|==|~=|===)", r)], "no upper or exact pins"


def test_shipped_code_has_nothing_the_registry_scanner_flags():
    assert scan_shipped_code() == []


def test_shipped_code_text_has_no_exec_or_eval_call_pattern():
    """Pattern scanners match text, not syntax: even a method named eval (``model.eval()``) or a comment would be flagged."""
    pattern = re.compile(r"\b(exec|eval)\(|subprocess|os\.environ|urllib\.request|requests\.(get|post)")
    hits = [f"{path.relative_to(REPO)}:{number}: {line.strip()}" for path in shipped_python_files()
            for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


@pytest.mark.parametrize("snippet", [
    "exec('1')", "eval('1')", "import subprocess", "from subprocess import run", "import os\nos.environ['X'] = '1'",
    "import os\nos.getenv('HOME')", "import os as o\no.system('ls')", "from os import environ", "import urllib.request",
    "from huggingface_hub import snapshot_download", "import requests", "import socket", "import os\nos.execv('x', [])",
])
def test_the_scan_catches(snippet):
    assert scan_source(snippet), snippet


def test_ruff_security_rules_are_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", ".", "--select", "S102,S307,E702", "--no-cache", "--output-format",
                             "concise"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def comfy_cli(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """comfy-cli offline: its config in a scratch HOME, tracking off, ruff from this environment on PATH."""
    env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "COMFY_CLI_NO_REMOTE_REFRESH": "1"}
    return subprocess.run([str(BIN / "comfy"), "--no-json", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_comfy_node_validate_and_the_published_archive(tmp_path):
    pack = copy_clone(tmp_path / "ComfyUI-ThinkDiff")
    home = tmp_path / "home"
    assert comfy_cli(["tracking", "disable"], pack, home).returncode == 0
    validate = comfy_cli(["node", "validate"], pack, home)
    assert validate.returncode == 0 and "All validation checks passed" in validate.stdout, validate.stdout + validate.stderr
    assert "Security warnings" not in validate.stdout

    pack_run = comfy_cli(["node", "pack"], pack, home)  # outside git: every file minus .comfyignore, as publish does
    assert pack_run.returncode == 0, pack_run.stdout + pack_run.stderr
    names = set(zipfile.ZipFile(pack / "node.zip").namelist())
    shipped = {"__init__.py", "pyproject.toml", "requirements.txt", "LICENSE"}
    assert shipped <= names
    assert {f"web/docs/{node}.md" for node in declared_node_ids()} <= names
    for workflow in shipped_workflows(pack):
        assert {f"workflows/{workflow.name}", f"workflows/{workflow.stem}.jpg"} <= names
    assert any(n.startswith("nodes/") for n in names) and any(n.startswith("thinkdiff/") for n in names)
    left_out = ("tests/", "scripts/", "training/", "evaluation/", "hub_setup/", "docs/", ".ci/", "requirements-dev.txt")
    assert not [n for n in names if n.startswith(left_out)]
