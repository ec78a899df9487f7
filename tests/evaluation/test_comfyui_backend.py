"""The comfyui backend with a stand-in client (its calls kept in order) and the workflow's API graph given by hand
(test_comfy_graph.py's): what is uploaded, the graph queued per sample, the order of the calls, the results, the
errors. test_generate_comfyui.py runs it against a real ComfyUI server with the shipped workflow."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluation.cobsat.comfyui_backend as comfyui_backend
from evaluation.cobsat.comfy_graph import configure
from evaluation.cobsat.comfyui_backend import SHIPPED_WORKFLOW, ComfyUIBackend
from evaluation.cobsat.config import ComfyUIConfig
from evaluation.cobsat.samples import Sample
from tests.evaluation.test_comfy_graph import template
from thinkdiff.errors import ThinkDiffError

OBJECT_INFO = {"ThinkDiffVLMEncode": {"input": {}}, "KSampler": {"input": {}}}


class StandInClient:
    """Keeps every call; uploads answer ``up/<subfolder>/<name>``, prompt k is ``pk``, its image a grey of k."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url, self.timeout_s, self.calls = url, timeout_s, []
        self.object_info, self.outputs = OBJECT_INFO, {}
        made.append(self)

    def get(self, path: str):
        self.calls.append(("get", path))
        return self.object_info

    def upload_image(self, name: str, data: bytes, subfolder: str) -> str:
        self.calls.append(("upload", name, data, subfolder))
        return f"up/{subfolder}/{name}"

    def queue(self, graph: dict) -> str:
        self.calls.append(("queue", graph))
        return f"p{sum(call[0] == 'queue' for call in self.calls)}"

    def wait(self, prompt_id: str) -> dict:
        self.calls.append(("wait", prompt_id))
        return {"status": {}, "outputs": self.outputs.get(prompt_id, {
            "20:1": {"images": [{"filename": f"{prompt_id}.png", "subfolder": "ThinkDiff", "type": "output"}]},
            "6": {"text": [f"Create {prompt_id}", " at dusk"]}, "9": {"text": ["not the encoder's"]}})}

    def view(self, image: dict) -> Image.Image:
        self.calls.append(("view", image))
        return Image.new("RGB", (8, 8), (int(image["filename"][1]),) * 3)


made: list[StandInClient] = []


@pytest.fixture
def workflows(monkeypatch: pytest.MonkeyPatch) -> list:
    """The stand-in client, and ui_to_api giving test_comfy_graph.py's template (each call's workflow and object info
    kept)."""
    made.clear()
    calls = []
    monkeypatch.setattr(comfyui_backend, "ComfyClient", StandInClient)
    monkeypatch.setattr(comfyui_backend, "ui_to_api", lambda ui, info: calls.append((ui, info)) or template())
    return calls


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two demo pictures: an RGB JPEG and a greyscale one."""
    root = tmp_path / "datasets"
    (root / "color_car").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / "color_car" / "blue_car.jpg")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(root / "color_car" / "brown_car.jpg")
    return root


@pytest.fixture
def backend_config(eval_config, dataset: Path):
    def make(*overrides: str):
        return eval_config('generate.backend="comfyui"', 'comfyui.url="http://comfy.test:8188"', "comfyui.timeout_s=12.5",
                           f"data.dataset_root={json.dumps(str(dataset))}", 'generate.instruction="Draw it.\\n\\n"',
                           "generate.max_new_tokens=11", "generate.steps=3", "generate.width=320", "generate.height=192",
                           *overrides)
    return make


def sample(index: int, images: tuple[str, ...], words: tuple[str, ...]) -> Sample:
    return Sample(1, len(images), index, tuple(f"{w}: " for w in words), images, {"detail": words[-1], "obj": "car"},
                  f"{index}_car_" + "_".join(words))


BLUE, BROWN = "color_car/blue_car.jpg", "color_car/brown_car.jpg"
TWO = sample(0, (BLUE, BROWN), ("blue", "brown", "orange"))
ONE = sample(5, (BROWN,), ("brown", "red"))


def test_the_client_the_workflow_and_its_settings(backend_config, workflows: list):
    backend = ComfyUIBackend(backend_config())
    (client,) = made
    assert backend.client is client and (client.url, client.timeout_s, client.calls) == ("http://comfy.test:8188", 12.5,
                                                                                         [("get", "/object_info")])
    assert workflows == [(json.loads(SHIPPED_WORKFLOW.read_text(encoding="utf-8")), OBJECT_INFO)]
    assert SHIPPED_WORKFLOW.parent.name == "workflows" and (SHIPPED_WORKFLOW.parents[1] / "evaluation" / "cobsat").is_dir()
    encode, ksampler = backend.template["6"]["inputs"], backend.template["8"]["inputs"]
    assert (encode["max_new_tokens"], encode["picture_labels"], ksampler["steps"]) == (11, "on", 3)  # configured once
    assert backend.template["9"]["inputs"]["value"] == 320 and backend.uploaded == {}


def test_a_workflow_of_ones_own(backend_config, workflows: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.json").write_text(json.dumps({"nodes": ["ünïcode"], "links": []}), encoding="utf-8")
    ComfyUIBackend(backend_config('comfyui.workflow="mine.json"'))
    assert workflows == [({"nodes": ["ünïcode"], "links": []}, OBJECT_INFO)]


def test_a_workflow_is_read_as_utf8_whatever_the_locale(backend_config, workflows: list, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    """A workflow's titles and notes may be anything: read as UTF-8 where a file opened without an encoding would be
    read as ASCII (a bare cluster node's C locale; tests/support/ascii_locale.py's subprocess cannot carry a mutant's
    non-ASCII name)."""
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: "ascii" if encoding is None else encoding)
    workflow = {"nodes": [{"title": "Bild → Text", "type": "Note"}], "links": []}
    (tmp_path / "mine.json").write_text(json.dumps(workflow, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(UnicodeDecodeError):
        (tmp_path / "mine.json").read_text()  # what the locale would do
    ComfyUIBackend(backend_config(f"comfyui.workflow={json.dumps(str(tmp_path / 'mine.json'))}"))
    assert workflows == [(workflow, OBJECT_INFO)]


def test_the_graph_of_a_sample(backend_config, workflows: list, dataset: Path):
    backend = ComfyUIBackend(backend_config())
    template_before = json.dumps(backend.template)
    graph = backend.graph(TWO, 1234)
    expected = template()
    configure(expected, backend.settings, ComfyUIConfig())  # the settings: test_comfy_graph.py's
    for key in ("3", "4", "5"):
        del expected[key]
    expected["6"]["inputs"] |= {"images": ["19", 0], "seed": 1234,
                                "prompt": "Draw it.\n\nWord 1: blue, <image>\n\nWord 2: brown, <image>\n\nWord 3: orange, "}
    expected["8"]["inputs"]["seed"] = 1234
    assert (expected["6"]["inputs"]["max_new_tokens"], expected["8"]["inputs"]["steps"], expected["9"]["inputs"]["value"]) == (11, 3, 320)
    expected["20:1"]["inputs"]["filename_prefix"] = "ThinkDiff/cobsat/shot_2/task_1/0_car_blue_brown_orange"
    expected |= {"16": {"class_type": "LoadImage", "inputs": {"image": "up/cobsat/color_car/blue_car.png"}},
                 "18": {"class_type": "LoadImage", "inputs": {"image": "up/cobsat/color_car/brown_car.png"}},
                 "19": {"class_type": "ImageBatch", "inputs": {"image1": ["16", 0], "image2": ["18", 0]}}}
    assert graph == expected and json.dumps(backend.template) == template_before  # the template stays as it was
    # Uploads: once per image, the PNG of its PIL decoding in RGB, into cobsat/<its folder>.
    uploads = [call for call in made[0].calls if call[0] == "upload"]
    assert [(name, folder) for _, name, _, folder in uploads] == [("blue_car.png", "cobsat/color_car"),
                                                                  ("brown_car.png", "cobsat/color_car")]
    for (_, _, data, _), path in zip(uploads, (BLUE, BROWN), strict=True):
        with Image.open(io.BytesIO(data)) as uploaded:
            assert (uploaded.format, uploaded.mode) == ("PNG", "RGB")
            assert np.array_equal(np.asarray(uploaded), np.asarray(Image.open(dataset / path).convert("RGB")))
    assert backend.uploaded == {BLUE: "up/cobsat/color_car/blue_car.png", BROWN: "up/cobsat/color_car/brown_car.png"}
    one = backend.graph(ONE, 7)
    assert [call for call in made[0].calls if call[0] == "upload"] == uploads  # brown_car was uploaded already
    assert one["16"] == {"class_type": "LoadImage", "inputs": {"image": "up/cobsat/color_car/brown_car.png"}}
    assert one["6"]["inputs"]["images"] == ["16", 0] and "18" not in one
    assert one["20:1"]["inputs"]["filename_prefix"] == "ThinkDiff/cobsat/shot_1/task_1/5_car_brown_red"


def test_the_hook_rewrites_each_graph(backend_config, workflows: list):
    seen = []

    def hook(graph: dict) -> dict:
        seen.append(graph["6"]["inputs"]["seed"])
        return {"hooked": graph["8"]["inputs"]["seed"]}

    backend = ComfyUIBackend(backend_config(), hook)
    assert backend.graph(TWO, 5) == {"hooked": 5} and seen == [5]
    assert ComfyUIBackend(backend_config()).graph(ONE, 6)["8"]["inputs"]["seed"] == 6  # no hook: the graph itself


def test_generate_queues_every_prompt_before_waiting(backend_config, workflows: list):
    backend = ComfyUIBackend(backend_config())
    client = made[0]
    client.outputs["p2"] = {"20:1": {"images": [{"filename": "p2.png"}]}}  # no text from the encoder
    results = backend.generate([TWO, ONE], [40, 41])
    queued = [call[1] for call in client.calls if call[0] == "queue"]
    assert queued == [backend.graph(TWO, 40), backend.graph(ONE, 41)]
    assert [call[0] for call in client.calls] == ["get", "upload", "upload", "queue", "queue", "wait", "view", "wait", "view"]
    assert [call[1] for call in client.calls if call[0] in ("wait", "view")] == [
        "p1", {"filename": "p1.png", "subfolder": "ThinkDiff", "type": "output"}, "p2", {"filename": "p2.png"}]
    assert [(r.text, r.tokens, r.vlm_seconds, r.image.getpixel((0, 0))) for r in results] == [
        ("Create p1 at dusk", 11, 0.0, (1, 1, 1)), ("", 11, 0.0, (2, 2, 2))]
    with pytest.raises(ValueError):
        backend.generate([TWO, ONE], [40])  # a seed per sample
    client.outputs["p3"] = {"20:1": {"images": [{"filename": "p3.png"}, {"filename": "p3b.png"}]}}
    with pytest.raises(ValueError):
        backend.generate([ONE], [1])  # one image per prompt


def test_a_server_without_the_pack_is_named(backend_config, workflows: list, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(StandInClient, "get", lambda self, path: {"KSampler": {}, "ThinkDiffVLMLoader": {}})
    with pytest.raises(ThinkDiffError) as error:
        ComfyUIBackend(backend_config())
    assert str(error.value) == ("the ComfyUI server at http://comfy.test:8188 has no ThinkDiff nodes: install this pack in its "
                                "custom_nodes and restart it")
    assert workflows == []


UI_OBJECT_INFO = {"ThinkDiffVLMEncode": {"input": {"required": {"seed": ["INT", {"default": 0}]}}, "output": []}}


@pytest.mark.parametrize(("text", "problem"), [
    (None, "FileNotFoundError(2, 'No such file or directory')"),
    ("{nodes", "JSONDecodeError('Expecting property name enclosed in double quotes: line 1 column 2 (char 1)')"),
    ("{}", "KeyError('links')"),
    ('{"links": [], "nodes": [{"id": 3, "type": "UNETLoader"}]}', "KeyError('UNETLoader')"),
    ('{"links": [], "nodes": [{"id": 3, "type": "ThinkDiffVLMEncode", "mode": 4}]}',
     "ValueError('node 3 (ThinkDiffVLMEncode) is bypassed; not supported here')"),
], ids=["missing", "not JSON", "not a workflow", "unknown node", "bypassed node"])
def test_a_workflow_it_cannot_use_is_named(backend_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text, problem):
    made.clear()
    monkeypatch.setattr(comfyui_backend, "ComfyClient", StandInClient)
    monkeypatch.setattr(StandInClient, "get", lambda self, path: UI_OBJECT_INFO)
    workflow = tmp_path / "workflow.json"
    if text is not None:
        workflow.write_text(text)
    with pytest.raises(ThinkDiffError) as error:
        ComfyUIBackend(backend_config(f"comfyui.workflow={json.dumps(str(workflow))}"))
    assert str(error.value) == f"cannot use the workflow {workflow}: {problem}"


def test_a_workflow_without_the_nodes_is_named(backend_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(comfyui_backend, "ComfyClient", StandInClient)
    monkeypatch.setattr(StandInClient, "get", lambda self, path: UI_OBJECT_INFO)
    workflow = tmp_path / "workflow.json"
    workflow.write_text('{"links": [], "nodes": [{"id": 3, "type": "ThinkDiffVLMEncode", "widgets_values": [5]}]}')
    with pytest.raises(ThinkDiffError) as error:
        ComfyUIBackend(backend_config(f"comfyui.workflow={json.dumps(str(workflow))}"))
    assert str(error.value) == "the workflow must have exactly one ThinkDiffFluxConditioning node, it has 0"
