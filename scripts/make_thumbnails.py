"""Regenerate the template-browser thumbnails (workflows/<name>.jpg) from the real frontend.

    .dev/venv/bin/python scripts/make_thumbnails.py [WORKFLOW ...]   # default: every shipped workflow

Installs the pack as ComfyUI-Manager would (tests/support/shipping.py) with stand-in model files, starts ComfyUI
(0.33 by default, see tests/support/paths.py), opens each shipped workflow in headless Chromium and saves the fitted graph
as an 800x600 JPEG beside the workflow.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.comfy_server import ComfyServer
from tests.support.frontend import Frontend, thumbnail
from tests.support.shipping import install_like_manager, stand_in_models
from thinkdiff.doctor import shipped_workflows


def main() -> None:
    chosen = set(sys.argv[1:])
    workflows = [w for w in shipped_workflows() if not chosen or w.stem in chosen]
    if chosen - {w.stem for w in workflows}:
        raise SystemExit(f"no shipped workflow {sorted(chosen - {w.stem for w in workflows})}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        pack, _ = install_like_manager(base, sys.executable)
        for image in (pack / "workflows" / "images").glob("*.png"):
            shutil.copy(image, base / "input" / image.name)
        stand_in_models(base / "models", shipped_workflows(pack))
        with ComfyServer(base) as server, Frontend(server) as ui:
            for workflow in workflows:
                loaded = ui.load(json.loads(workflow.read_text()))
                if loaded.missing:
                    raise SystemExit(f"{workflow.name}: missing node types {loaded.missing}")
                shot = ui.screenshot(base / "shots" / f"{workflow.stem}.png")
                print("wrote", thumbnail(shot, workflow.with_suffix(".jpg")))


if __name__ == "__main__":
    main()
