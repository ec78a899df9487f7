"""The node pack under test: a running ComfyUI server draws each sample with the shipped in-context workflow.

The workflow (UI format, read at run time) becomes an API graph with the server's ``/object_info``. Per sample its
image inputs are rebuilt for N demos (N LoadImage nodes joined by a chain of ImageBatch nodes, images uploaded with
``/upload/image`` as PNGs), the VLM node gets ThinkDiff's CoBSAT prompt and the sample's seed, the sampler the same seed,
and the settings and model names come from the config. ``batch_size`` prompts are queued at once so the server
never waits for the client; each image is fetched with ``/view``. The HTTP calls are ``comfy_client.py``'s, the graph
edits ``comfy_graph.py``'s.

ComfyUI's ImageBatch scales every image to the first one's size (bilinear, centre crop) before the VLM sees them.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from thinkdiff.errors import ThinkDiffError
from thinkdiff.workflow_api import ui_to_api

from .comfy_client import ComfyClient
from .comfy_graph import Graph, configure, node_of_type, set_images
from .config import EvalConfig
from .prompt import thinkdiff_prompt
from .records import Generated
from .samples import Sample

SHIPPED_WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "thinkdiff_lvlm_in_context.json"
UPLOAD_FOLDER = "cobsat"
OUTPUT_PREFIX = "ThinkDiff/cobsat"


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
        except ThinkDiffError:
            raise
        except (OSError, ValueError, KeyError) as e:  # ValueError: not JSON, a bypassed node
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
