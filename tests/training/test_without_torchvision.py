"""The docs' install line (requirements.txt + requirements-dev.txt) brings no torchvision; transformers 5.x's default
Qwen2-VL image-processing module imports it at import time. The command-line tools must start without it."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO


@pytest.fixture(scope="module")
def site_without_torchvision(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This interpreter's site-packages (overlays' ``.pth`` paths included, first wins) as links, less torchvision;
    run with ``python -S``."""
    view = tmp_path_factory.mktemp("site-without-torchvision")
    taken: set[str] = set()
    for folder in [Path(p) for p in sys.path if p.endswith("site-packages")]:
        for entry in sorted(folder.iterdir()):
            key = "meta:" + entry.name.split("-")[0].lower() if entry.suffix in (".dist-info", ".egg-info") else entry.name
            if entry.name.startswith("torchvision") or entry.suffix == ".pth" or key in taken:
                continue
            taken.add(key)
            (view / entry.name).symlink_to(entry.resolve())
    return view


@pytest.mark.parametrize("package", ["training", "evaluation", "thinkdiff"])
def test_the_command_line_starts_without_torchvision(site_without_torchvision: Path, package: str) -> None:
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import torchvision"],
        env={"PYTHONPATH": str(site_without_torchvision)}, capture_output=True, text=True,
    )
    assert probe.returncode != 0, "the view still holds torchvision"
    result = subprocess.run(
        [sys.executable, "-S", "-m", package, "--help"], cwd=REPO,
        env={"PYTHONPATH": f"{site_without_torchvision}:{REPO}"}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
