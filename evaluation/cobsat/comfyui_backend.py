"""The node pack under test: a running ComfyUI server draws each sample with the shipped in-context workflow.

The workflow (UI format, read at run time) becomes an API graph with the server's ``/object_info``. Per sample its
image inputs are rebuilt for N demos (N LoadImage nodes joined by a chain of ImageBatch nodes, images uploaded with
``/upload/image`` as PNGs), the VLM node gets ThinkDiff's CoBSAT prompt and the sample's seed, the sampler the same seed,
and the settings and model names come from the config. ``batch_size`` prompts are queued at once so the server
never waits for the client; each image is fetched with ``/view``.

ComfyUI's ImageBatch scales every image to the first one's size (bilinear, centre crop) before the VLM sees them.
"""

from __future__ import annotations

import copy
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from thinkdiff.errors import ThinkDiffError
from thinkdiff.workflow_api import ui_to_api

from .config import ComfyUIConfig, EvalConfig, GenerateConfig
from .prompt import thinkdiff_prompt
from .records import Generated
from .samples import Sample

SHIPPED_WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "thinkdiff_lvlm_in_context.json"
UPLOAD_FOLDER = "cobsat"
OUTPUT_PREFIX = "ThinkDiff/cobsat"
IMAGE_NODES = ("LoadImage", "ImageBatch")
# (node type, input) of each model name in [comfyui].
MODEL_INPUTS = {"vlm": ("ThinkDiffVLMLoader", "model"), "aligner": ("ThinkDiffAlignerLoader", "aligner_name"),
                "unet": ("UNETLoader", "unet_name"), "clip_l": ("DualCLIPLoader", "clip_name1"),
                "t5": ("DualCLIPLoader", "clip_name2"), "vae": ("VAELoader", "vae_name")}
Graph = dict[str, Any]


def _refusal(body: bytes) -> str:
    """ComfyUI's answer to a refused request; a graph's node errors one per node (``node type: message: details``)."""
    try:
        answer = json.loads(body)
        errors = [f"{node['class_type']}: " + ": ".join(filter(None, (error.get("message"), error.get("details"))))
                  for node in answer["node_errors"].values() for error in node["errors"]]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return body.decode(errors="replace")[:2000]
    hint = " (set [comfyui] vlm, aligner, unet, clip_l, t5, vae to names this ComfyUI lists)" if "not in" in str(errors) else ""
    return "; ".join(errors or [answer.get("error", {}).get("message", "")]) + hint


class ComfyClient:
    """The few HTTP calls of ComfyUI's API this backend needs."""

    def __init__(self, url: str, timeout_s: float = 1800.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.client_id = str(uuid.uuid4())

    def _call(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            raise ThinkDiffError(f"ComfyUI answered {e.code} to {path}: {_refusal(e.read())}") from e
        except urllib.error.URLError as e:
            raise ThinkDiffError(f"no ComfyUI server at {self.url} ({e.reason}): start ComfyUI with this pack installed, "
                                 "or set [comfyui] url") from e

    def get(self, path: str) -> Any:
        return json.loads(self._call(path))

    def post(self, path: str, data: Any) -> Any:
        body = self._call(path, json.dumps(data).encode(), {"Content-Type": "application/json"})
        return json.loads(body) if body else None

    def upload_image(self, name: str, data: bytes, subfolder: str) -> str:
        """Put an image file into ComfyUI's input folder; returns the name LoadImage takes (``subfolder/name``)."""
        boundary = uuid.uuid4().hex
        fields = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
                  for key, value in (("subfolder", subfolder), ("type", "input"), ("overwrite", "true"))]
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        body = b"".join(fields) + head + data + f"\r\n--{boundary}--\r\n".encode()
        answer = json.loads(self._call("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue(self, graph: Graph) -> str:
        return self.post("/prompt", {"prompt": graph, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str) -> dict[str, Any]:
        """The prompt's history entry once it has finished; raises with ComfyUI's message if it failed."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("completed") is not None:
                if status.get("status_str") != "success":
                    errors = [data for kind, data in status.get("messages", []) if kind == "execution_error"]
                    detail = errors[0].get("exception_message", "") if errors else status.get("status_str", "")
                    raise ThinkDiffError(f"ComfyUI failed on prompt {prompt_id}: {detail.strip()}")
                return entry
            time.sleep(0.2)
        raise ThinkDiffError(f"ComfyUI did not finish prompt {prompt_id} within {self.timeout_s:.0f} s ([comfyui] timeout_s)")

    def view(self, image: dict[str, str]) -> Image.Image:
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        return Image.open(io.BytesIO(self._call(f"/view?{query}"))).convert("RGB")


def node_of_type(graph: Graph, class_type: str) -> str:
    ids = [k for k, node in graph.items() if node["class_type"] == class_type]
    if len(ids) != 1:
        raise ThinkDiffError(f"the workflow must have exactly one {class_type} node, it has {len(ids)}")
    return ids[0]


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def set_input(graph: Graph, node_id: str, name: str, value: Any) -> None:
    """Set an input, or the value of the primitive node it is linked to (the workflows' width/height nodes)."""
    current = graph[node_id]["inputs"].get(name)
    if is_link(current) and "value" in graph[current[0]]["inputs"]:
        graph[current[0]]["inputs"]["value"] = value
    else:
        graph[node_id]["inputs"][name] = value


def set_images(graph: Graph, node_id: str, names: Sequence[str]) -> None:
    """Feed ``names`` (uploaded images, in order) to ``node_id``'s ``images`` input, replacing its LoadImage/ImageBatch
    inputs with N LoadImage nodes joined by ImageBatch nodes."""
    old, todo = set(), [graph[node_id]["inputs"].pop("images", None)]
    while todo:
        link = todo.pop()
        if is_link(link) and graph[link[0]]["class_type"] in IMAGE_NODES and link[0] not in old:
            old.add(link[0])
            todo += list(graph[link[0]]["inputs"].values())
    for key in old:
        del graph[key]
    if any(is_link(v) and v[0] in old for node in graph.values() for v in node["inputs"].values()):
        raise ThinkDiffError("the workflow uses its input images elsewhere too; the comfyui backend cannot rebuild them")
    next_id = max(int(k) for k in graph if k.isdigit()) + 1
    current = None
    for offset, name in enumerate(names):
        load = str(next_id + 2 * offset)
        graph[load] = {"class_type": "LoadImage", "inputs": {"image": name}}
        if current is None:
            current = [load, 0]
            continue
        batch = str(next_id + 2 * offset + 1)
        graph[batch] = {"class_type": "ImageBatch", "inputs": {"image1": current, "image2": [load, 0]}}
        current = [batch, 0]
    graph[node_id]["inputs"]["images"] = current


def configure(graph: Graph, settings: GenerateConfig, models: ComfyUIConfig) -> None:
    """Put the run's sampling settings and model names (the parts equal for every sample) into the workflow graph."""
    encode = node_of_type(graph, "ThinkDiffVLMEncode")
    graph[encode]["inputs"].update(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                   top_p=settings.top_p, greedy=False, stop_at_eos=False, picture_labels="on",
                                   min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    graph[node_of_type(graph, "ThinkDiffFluxConditioning")]["inputs"]["guidance"] = settings.guidance
    graph[node_of_type(graph, "KSampler")]["inputs"]["steps"] = settings.steps
    for node_type in ("EmptySD3LatentImage", "ModelSamplingFlux"):
        node = node_of_type(graph, node_type)
        set_input(graph, node, "width", settings.width)
        set_input(graph, node, "height", settings.height)
    for setting, (node_type, name) in MODEL_INPUTS.items():
        if getattr(models, setting):
            graph[node_of_type(graph, node_type)]["inputs"][name] = getattr(models, setting)


class ComfyUIBackend:
    def __init__(self, config: EvalConfig, graph_hook: Callable[[Graph], Graph] | None = None) -> None:
        self.settings, self.dataset_root = config.generate, config.dataset_root
        self.client = ComfyClient(config.comfyui.url, config.comfyui.timeout_s)
        workflow = config.path(config.comfyui.workflow) if config.comfyui.workflow else SHIPPED_WORKFLOW
        object_info = self.client.get("/object_info")
        if "ThinkDiffVLMEncode" not in object_info:
            raise ThinkDiffError(f"the ComfyUI server at {self.client.url} has no ThinkDiff nodes: install this pack in its "
                                 "custom_nodes and restart it")
        try:
            self.template = ui_to_api(json.loads(workflow.read_text(encoding="utf-8")), object_info)
            configure(self.template, config.generate, config.comfyui)
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise ThinkDiffError(f"cannot use the workflow {workflow}: {e!r}") from e
        self.graph_hook = graph_hook or (lambda graph: graph)
        self.uploaded: dict[str, str] = {}

    def _upload(self, path: str) -> str:
        """Upload a dataset image once, as the PNG of its PIL decoding: ComfyUI 0.33's LoadImage decodes JPEGs with FFmpeg,
        whose colour conversion differs from PIL's (which the reference used) by up to 60/255 at colour edges."""
        if path not in self.uploaded:
            png = io.BytesIO()
            with Image.open(self.dataset_root / path) as image:
                image.convert("RGB").save(png, format="PNG")
            name = Path(path).with_suffix(".png")
            self.uploaded[path] = self.client.upload_image(name.name, png.getvalue(), f"{UPLOAD_FOLDER}/{name.parent}")
        return self.uploaded[path]

    def graph(self, sample: Sample, seed: int) -> Graph:
        graph = copy.deepcopy(self.template)
        encode = node_of_type(graph, "ThinkDiffVLMEncode")
        set_images(graph, encode, [self._upload(path) for path in sample.image_inputs])
        graph[encode]["inputs"].update(prompt=thinkdiff_prompt(sample, self.settings.instruction), seed=seed)
        graph[node_of_type(graph, "KSampler")]["inputs"]["seed"] = seed
        prefix = f"{OUTPUT_PREFIX}/shot_{sample.shot}/task_{sample.task}/{sample.save_name}"
        graph[node_of_type(graph, "SaveImage")]["inputs"]["filename_prefix"] = prefix
        return self.graph_hook(graph)

    def generate(self, samples: Sequence[Sample], seeds: Sequence[int]) -> list[Generated]:
        graphs = [self.graph(sample, seed) for sample, seed in zip(samples, seeds, strict=True)]
        prompt_ids = [self.client.queue(graph) for graph in graphs]
        out = []
        for graph, prompt_id in zip(graphs, prompt_ids, strict=True):
            outputs = self.client.wait(prompt_id)["outputs"]
            (image,) = outputs[node_of_type(graph, "SaveImage")]["images"]
            text = "".join(outputs.get(node_of_type(graph, "ThinkDiffVLMEncode"), {}).get("text", []))
            out.append(Generated(self.client.view(image), text, self.settings.max_new_tokens))
        return out
