"""Install the pack the way ComfyUI-Manager does (clone into custom_nodes/, pip install -r requirements.txt), start ComfyUI
0.3.75, and use it like a user: registered nodes, templates with thumbnails, help pages, tooltips, and every shipped workflow
opened in the real frontend (headless Chromium), whose own API export must equal the graph the end-to-end tests run."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from io import BytesIO
from typing import Any

import pytest
from PIL import Image

from tests.support.comfy_server import PACK_NAME, ComfyServer
from tests.support.frontend import Frontend, chromium_available
from tests.support.paths import COMFYUI_VERSION, DEV, REPO
from tests.support.shipping import declared_node_ids, install_like_manager, lean_python, stand_in_models
from tests.support.tiny_comfy import TINY_ALIGNER, TINY_VLM
from tests.support.tiny_models import make_aligner, make_qwen2vl
from thinkdiff.doctor import shipped_workflows
from thinkdiff.workflow_api import VIRTUAL_NODES, ui_to_api

pytestmark = pytest.mark.comfyui
ARTIFACTS = DEV / "artifacts" / "frontend"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    """This pack installed as the Manager does into an environment with only ComfyUI's own requirements, and served."""
    base = tmp_path_factory.mktemp("manager_install")
    python = lean_python(base)
    pack, pip = install_like_manager(base, python)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    for image in (pack / "workflows" / "images").glob("*.png"):  # what the templates' LoadImage nodes name
        shutil.copy(image, base / "input" / image.name)
    stand_in_models(base / "models", shipped_workflows(pack))  # frontends >= 1.4x flag loaders whose files are absent
    make_qwen2vl(base / "models" / "LLM" / TINY_VLM)
    make_aligner(base / "models" / "thinkdiff" / TINY_ALIGNER)
    with ComfyServer(base, python=python) as server:
        server.pack, server.pip = pack, pip
        yield server


def test_the_lean_environment_lacks_what_only_the_tests_install(installed):
    """The server runs in a venv with ComfyUI's requirements and this pack's, nothing from requirements-dev.txt."""
    python = installed.python
    probe = "import importlib.util as u; print([m for m in ('diffusers', 'accelerate', 'pytest', 'playwright') if u.find_spec(m)])"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    wanted = [line.split(">=")[0] for line in (REPO / "requirements.txt").read_text().split() if line]
    probe = f"import importlib.metadata as m; print(all(m.version(n) for n in {wanted!r}))"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_the_pack_thinks_and_aligns_in_the_lean_environment(installed):
    """Runs the VLM (transformers, the chat template) and the aligner with only ComfyUI's and this pack's requirements."""
    graph = {
        "1": {"class_type": "ThinkDiffVLMLoader", "inputs": {"model": TINY_VLM, "dtype": "fp32", "device": "default",
                                                             "weights": "default"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "thinkdiff_blue_ball.png"}},
        "3": {"class_type": "ThinkDiffVLMEncode", "inputs": {
            "vlm": ["1", 0], "images": ["2", 0], "prompt": "Describe <image>.", "seed": 1, "max_new_tokens": 4,
            "temperature": 0.6, "top_p": 0.9, "greedy": False, "stop_at_eos": False, "picture_labels": "auto",
            "min_pixels": 3136, "max_pixels": 65536}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},
        "5": {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": TINY_ALIGNER}},
        "6": {"class_type": "ThinkDiffFluxConditioning", "inputs": {"features": ["3", 0], "aligner": ["5", 0], "guidance": 3.5,
                                                                    "text": "", "text_tokens": 128}},
        "7": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
    }
    result = installed.run(graph)
    assert result.ok, result.error + installed.log()[-3000:]
    assert result.texts("4")[0].strip()


@pytest.fixture(scope="module")
def info(installed) -> dict[str, Any]:
    return installed.object_info()


@pytest.fixture(scope="module")
def ours(info) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in info.items() if spec["python_module"] == f"custom_nodes.{PACK_NAME}"}


def fetch(server: ComfyServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as e:
        return e.code, "", b""


def test_the_install_is_a_copy_with_no_symlinks(installed):
    assert not installed.pack.is_symlink() and (installed.pack / "__init__.py").is_file()
    assert not (installed.pack / ".dev").exists() and not (installed.pack / ".git").exists()


def test_every_node_registers_without_import_errors(installed, ours):
    assert set(ours) == declared_node_ids(installed.pack)
    log = installed.log()
    ours_in_log = [line for line in log.splitlines() if PACK_NAME in line]
    assert not [line for line in ours_in_log if "IMPORT FAILED" in line or "Cannot import" in line], "\n".join(ours_in_log)
    assert any("seconds" in line for line in ours_in_log), "no import-time line for the pack:\n" + log[-3000:]


def test_templates_are_listed_with_thumbnails(installed):
    workflows = shipped_workflows(installed.pack)
    assert workflows
    assert sorted(installed.get("/workflow_templates")[PACK_NAME]) == sorted(w.stem for w in workflows)
    for workflow in workflows:
        status, _, body = fetch(installed, f"/api/workflow_templates/{PACK_NAME}/{workflow.name}")
        assert status == 200 and json.loads(body) == json.loads(workflow.read_text())
        status, kind, body = fetch(installed, f"/api/workflow_templates/{PACK_NAME}/{workflow.stem}.jpg")  # the browser's URL
        assert status == 200 and kind == "image/jpeg", workflow.stem
        thumb = Image.open(BytesIO(body))
        assert thumb.format == "JPEG" and thumb.width >= 400 and len(thumb.convert("L").getcolors(256) or []) > 16


def test_help_pages_are_served_for_every_node(installed, ours):
    for name, spec in ours.items():
        status, _, body = fetch(installed, f"/extensions/{PACK_NAME}/docs/{name}.md")  # where the frontend looks
        assert status == 200, name
        page = body.decode()
        assert page.startswith(f"# {spec['display_name']}"), name
        inputs = [*spec["input"].get("required", {}), *spec["input"].get("optional", {})]
        missing = [i for i in inputs if f"`{i}`" not in page]
        assert not missing, f"{name}.md does not document {missing}"
        assert "## Outputs" in page


def test_every_input_has_a_tooltip_and_every_node_a_description(ours):
    assert ours
    for name, spec in ours.items():
        assert spec["description"].strip(), name
        for section in ("required", "optional"):
            for input_name, input_spec in spec["input"].get(section, {}).items():
                options = input_spec[1] if len(input_spec) > 1 else {}
                assert options.get("tooltip", "").strip(), f"{name}.{input_name} has no tooltip"


def comparable(api: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """class_type + inputs; optional widget inputs a graph leaves out get their default, as ComfyUI's executor does."""
    out = {}
    for node_id, node in api.items():
        inputs = dict(node["inputs"])
        for name, spec in info[node["class_type"]]["input"].get("optional", {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            default = options.get("default", spec[0][0] if isinstance(spec[0], list) and spec[0] else None)
            if name not in inputs and default is not None:
                inputs[name] = default
        out[node_id] = {"class_type": node["class_type"], "inputs": inputs}
    return out


@pytest.fixture(scope="module")
def frontend(installed):
    if not chromium_available():
        pytest.fail("no /usr/bin/chromium: run scripts/bootstrap.sh (it installs Debian's chromium)")
    with Frontend(installed) as ui:
        yield ui


@pytest.mark.parametrize("name", [w.stem for w in shipped_workflows()])
def test_template_opens_in_the_real_frontend(installed, info, ours, frontend, name):
    workflow = json.loads((installed.pack / "workflows" / f"{name}.json").read_text())
    loaded = frontend.load(workflow)
    frontend.screenshot(ARTIFACTS / f"{COMFYUI_VERSION}" / f"{name}.png")
    absent = sorted({node["type"] for node in workflow["nodes"]} - set(info) - VIRTUAL_NODES)
    if absent:  # a template for a newer ComfyUI (native CogVideoX): the frontend must say exactly which nodes are missing
        assert sorted(set(loaded.missing)) == absent and loaded.dialog_shown
        pytest.skip(f"ComfyUI {COMFYUI_VERSION} lacks {absent}; the frontend lists them as missing")
    assert loaded.missing == [] and not loaded.dialog_shown
    assert not [n for n in loaded.nodes if n["has_errors"] or not n["registered"]]
    for node in loaded.nodes:
        if node["type"] in ours:
            spec = ours[node["type"]]["input"]
            widgets = [k for section in ("required", "optional") for k, v in spec.get(section, {}).items()
                       if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
            assert set(widgets) <= set(node["widgets"]), f"{node['type']} renders {node['widgets']}, expected {widgets}"
            assert node["size"][0] > 0 and node["size"][1] > 0
    assert comparable(loaded.api, info) == comparable(ui_to_api(workflow, info), info)
    assert frontend.console_errors == []
