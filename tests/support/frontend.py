"""Drive the ComfyUI frontend a server serves (comfyui-frontend-package) in Debian's headless Chromium via Playwright.

Only the system Chromium is used (``/usr/bin/chromium``, installed by scripts/bootstrap.sh); Playwright's own browser
download does not work offline. Workflows are loaded through the app's own API (``app.loadGraphData``) and exported with
``app.graphToPrompt()``, exactly what the Run button sends.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
# No first-run template dialog, no model dialog (the doctor covers models), full-detail rendering at any zoom, no minimap.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
            "LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.Minimap.Visible": False}
MISSING_NODES_TEXT = "This workflow has missing nodes"
LOAD_SCRIPT = """async (workflow) => {
    const app = window.app;
    const missing = [];
    const original = app.showMissingNodesError.bind(app);
    app.showMissingNodesError = (types) => { missing.push(...types.map(t => t.type ?? t)); return original(types); };
    try { await app.loadGraphData(workflow); } finally { app.showMissingNodesError = original; }
    const nodes = app.graph.nodes.map(n => ({id: String(n.id), type: n.type, has_errors: !!n.has_errors,
        registered: !!(window.LiteGraph && window.LiteGraph.registered_node_types[n.type]),
        widgets: (n.widgets || []).map(w => w.name), size: [n.size[0], n.size[1]]}));
    const prompt = await app.graphToPrompt();
    return {missing, nodes, api: prompt.output};
}"""
RENDER_SCRIPT = """async () => {
    const app = window.app, canvas = app.canvas;
    await app.extensionManager.command.execute('Comfy.Canvas.FitView');
    canvas.show_info = false;
    canvas.setDirty(true, true);
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const title = window.LiteGraph ? window.LiteGraph.NODE_TITLE_HEIGHT : 30;
    const {offset, scale} = canvas.ds, rect = canvas.canvas.getBoundingClientRect();
    const xs = [], ys = [];
    for (const n of app.graph.nodes) { xs.push(n.pos[0], n.pos[0] + n.size[0]); ys.push(n.pos[1] - title, n.pos[1] + n.size[1]); }
    const x0 = (Math.min(...xs) + offset[0]) * scale + rect.left, y0 = (Math.min(...ys) + offset[1]) * scale + rect.top;
    const x1 = (Math.max(...xs) + offset[0]) * scale + rect.left, y1 = (Math.max(...ys) + offset[1]) * scale + rect.top;
    return {x: Math.max(0, x0 - 16), y: Math.max(0, y0 - 16), width: x1 - x0 + 32, height: y1 - y0 + 32};
}"""


def chromium_available() -> bool:
    return Path(CHROMIUM).is_file()


@dataclass
class LoadedWorkflow:
    missing: list[str]
    nodes: list[dict[str, Any]]
    api: dict[str, Any]
    dialog_shown: bool


class Frontend:
    """``with Frontend(server) as ui: ui.load(workflow_json); ui.screenshot(path)``; ``server`` is a ComfyServer."""

    def __init__(self, server: Any, viewport: tuple[int, int] = (1920, 1080)) -> None:
        self.server, self.viewport = server, viewport
        self.console_errors: list[str] = []

    def __enter__(self) -> Frontend:
        from playwright.sync_api import sync_playwright

        for key, value in SETTINGS.items():
            self.server.post(f"/settings/{key}", value)
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self._playwright = sync_playwright().start()
        try:
            self._context = self._playwright.chromium.launch_persistent_context(
                self._profile.name, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": self.viewport[0], "height": self.viewport[1]})
            self.page = self._context.new_page()
            self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))
            self.page.goto(self.server.url)
            self.page.wait_for_function("window.app && window.app.graph && window.app.extensionManager", timeout=120_000)
            self.page.evaluate("window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "_context", None):
            self._context.close()
        self._playwright.stop()
        self._profile.cleanup()

    def load(self, workflow: dict[str, Any]) -> LoadedWorkflow:
        result = self.page.evaluate(LOAD_SCRIPT, workflow)
        dialog = self.page.get_by_text(MISSING_NODES_TEXT)
        shown = dialog.count() > 0
        if shown:  # close it, so that it is not taken for the next workflow's
            self.page.keyboard.press("Escape")
            dialog.first.wait_for(state="detached", timeout=10_000)
        return LoadedWorkflow(result["missing"], result["nodes"], result["api"], shown)

    def screenshot(self, path: Path) -> Path:
        """The whole graph, fitted to the window (focus mode: no menus)."""
        box = self.page.evaluate(RENDER_SCRIPT)
        width, height = self.viewport
        clip = {"x": box["x"], "y": box["y"], "width": min(box["width"], width - box["x"]),
                "height": min(box["height"], height - box["y"])}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), clip=clip)
        return path


def thumbnail(screenshot: Path, target: Path, size: tuple[int, int] = (800, 600), background: str = "#141414") -> Path:
    """A template-browser thumbnail: the graph screenshot letterboxed into ``size``, as JPEG."""
    image = Image.open(screenshot).convert("RGB")
    image.thumbnail(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", size, background)
    canvas.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    canvas.save(target, "JPEG", quality=85, optimize=True)
    return target
