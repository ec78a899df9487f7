"""What users get: the files a clone holds, the shipped code, the node ids it declares, and an AST scan for what the
Comfy Registry scanner flags (exec/eval, subprocess, os.environ, network)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from thinkdiff.doctor import workflow_requirements
from thinkdiff.vision import VISION_FORMAT

from .comfy_server import PACK_NAME
from .paths import COMFYUI_VERSION, DEV, REPO, SUPPORTED_COMFYUI

SHIPPED_CODE = ("__init__.py", "nodes", "thinkdiff")
FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "breakpoint"}
FORBIDDEN_MODULES = {"subprocess", "socket", "urllib", "http", "requests", "aiohttp", "httpx", "ftplib", "smtplib", "pty",
                     "telnetlib", "webbrowser", "huggingface_hub", "ctypes"}
FORBIDDEN_OS = {"environ", "environb", "getenv", "putenv", "unsetenv", "system", "popen", "fork", "forkpty", "kill"}
FORBIDDEN_OS_PREFIXES = ("exec", "spawn", "posix_spawn")


def clone_files(repo: Path = REPO) -> list[str]:
    """Paths a clone of the repository holds once the working tree is committed: tracked + untracked, not ignored."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         check=True, capture_output=True).stdout.decode()
    return sorted(p for p in set(out.split("\0")) if p and (repo / p).is_file())


def copy_clone(dest: Path, repo: Path = REPO) -> Path:
    """Copy the clone files into ``dest`` (as ComfyUI-Manager's git clone would lay them out)."""
    for rel in clone_files(repo):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)
    return dest


def lean_python(base: Path) -> str:
    """A throwaway virtual environment under ``base`` that holds only ComfyUI's own requirements (an overlay on
    .dev/venv-lean, built by scripts/bootstrap.sh for this ComfyUI version): what a user's ComfyUI has before the Manager
    installs this pack's requirements into it."""
    lean = DEV / ("venv-lean" if SUPPORTED_COMFYUI[-1] == COMFYUI_VERSION else f"venv-lean-comfyui-{COMFYUI_VERSION}")
    if not (lean / "bin" / "python").is_file():
        raise FileNotFoundError(f"no {lean}: run scripts/bootstrap.sh")
    subprocess.run(["bash", str(REPO / "scripts" / "overlay_venv.sh"), str(lean), str(base / "venv")], check=True,
                   capture_output=True)
    return str(base / "venv" / "bin" / "python")


def install_like_manager(base: Path, python: str) -> tuple[Path, subprocess.CompletedProcess]:
    """A ComfyUI base dir with this pack copied into custom_nodes/ and ``pip install -r requirements.txt`` run with
    ``python``, as the Manager does."""
    for sub in ("models", "custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    pack = copy_clone(base / "custom_nodes" / PACK_NAME)
    pip = subprocess.run([python, "-m", "pip", "install", "--no-input", "-r", "requirements.txt"], cwd=pack,
                         capture_output=True, text=True, timeout=600)
    return pack, pip


def stand_in_models(models: Path, workflows: list[Path]) -> list[Path]:
    """Placeholder files under the names the workflows load, so a frontend sees a complete install (no missing-model flags).

    Empty files, except what the pack reads to list a model: a VLM folder needs a config.json, a vision-encoder file the
    vision format in its metadata. Nothing here can be loaded; it is for opening templates, not running them.
    """
    written = []
    for workflow in workflows:
        for req in workflow_requirements(json.loads(workflow.read_text())):
            path = models / req.model.folder / req.model.name
            path.parent.mkdir(parents=True, exist_ok=True)
            if req.model.is_folder:
                path.mkdir(parents=True, exist_ok=True)
                path = path / "config.json"
                path.write_text("{}")
            elif req.node_type == "ThinkDiffVisionLoader":
                save_file({"stand_in": torch.zeros(1)}, str(path), metadata={"format": VISION_FORMAT})
            else:
                path.touch()
            written.append(path)
    return written


def shipped_python_files(root: Path = REPO) -> list[Path]:
    files: list[Path] = []
    for entry in SHIPPED_CODE:
        path = root / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def declared_node_ids(root: Path = REPO) -> set[str]:
    """``node_id="..."`` of every ``io.Schema(...)`` in nodes/, read from the source (no import)."""
    ids = set()
    for path in sorted((root / "nodes").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "Schema":
                ids |= {kw.value.value for kw in node.keywords if kw.arg == "node_id" and isinstance(kw.value, ast.Constant)}
    return ids


@dataclass(frozen=True)
class Finding:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def _module_root(name: str | None) -> str:
    return (name or "").split(".")[0]


def scan_source(source: str, filename: str = "<source>") -> list[Finding]:
    """Uses of exec/eval-like builtins, process/network modules and the os environment / process functions."""
    findings: list[Finding] = []
    os_aliases = {"os"}

    def flag(node: ast.AST, what: str) -> None:
        findings.append(Finding(f"{filename}:{getattr(node, 'lineno', 0)}", what))

    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _module_root(alias.name) in FORBIDDEN_MODULES:
                    flag(node, f"import {alias.name}")
                if alias.name == "os":
                    os_aliases.add(alias.asname or "os")
        elif isinstance(node, ast.ImportFrom):
            if _module_root(node.module) in FORBIDDEN_MODULES:
                flag(node, f"from {node.module} import ...")
            if node.module == "os":
                for alias in node.names:
                    if alias.name in FORBIDDEN_OS or alias.name.startswith(FORBIDDEN_OS_PREFIXES):
                        flag(node, f"from os import {alias.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            flag(node, f"{node.func.id}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module":
            flag(node, "importlib.import_module()")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in os_aliases
              and (node.attr in FORBIDDEN_OS or node.attr.startswith(FORBIDDEN_OS_PREFIXES))):
            flag(node, f"os.{node.attr}")
    return findings


def scan_shipped_code(root: Path = REPO) -> list[Finding]:
    return [f for path in shipped_python_files(root) for f in scan_source(path.read_text(), str(path.relative_to(root)))]


