"""``python -m thinkdiff doctor``: is a ComfyUI install ready for each shipped workflow?

For every workflow it lists the model files the graph loads (ThinkDiff loaders' widgets and the ``properties.models``
links of core loaders), says which are present under ``ComfyUI/models`` and, for missing ones, where they go and how to
get them. It then checks that the widths fit: VLM / vision hidden size = aligner input, aligner output = the diffusion
model's context width (and T5's width, which appended text must match). Widths come from config.json and safetensors
headers only: no tensor is loaded, nothing is downloaded and ComfyUI is not imported.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ThinkDiffError
from .model_setup import ModelFile, describe
from .safetensors_header import read_header
from .vram_advice import advice

PACK_ROOT = Path(__file__).absolute().parents[1]
WORKFLOW_FOLDERS = ("example_workflows", "workflows")
# Loader node -> (models folder, widget positions naming files, whether a name is a Hugging Face folder).
LOADERS = {"ThinkDiffVLMLoader": ("LLM", (0,), True), "ThinkDiffAlignerLoader": ("thinkdiff", (0,), False),
           "ThinkDiffVisionLoader": ("thinkdiff", (0,), False), "UNETLoader": ("diffusion_models", (0,), False),
           "VAELoader": ("vae", (0,), False), "CLIPLoader": ("text_encoders", (0,), False),
           "DualCLIPLoader": ("text_encoders", (0, 1), False), "TripleCLIPLoader": ("text_encoders", (0, 1, 2), False),
           "CheckpointLoaderSimple": ("checkpoints", (0,), False), "CLIPVisionLoader": ("clip_vision", (0,), False)}
# Folders ComfyUI also searches for a models key (folder_paths.py legacy names).
FOLDER_ALIASES = {"text_encoders": ("text_encoders", "clip"), "diffusion_models": ("diffusion_models", "unet")}
ALIGNER_IN = ("in_proj.weight", "mm_projector.0.weight")
ALIGNER_OUT = ("out_proj.weight", "mm_projector.2.weight")
CONTEXT_KEYS = {"txt_in.weight": "Flux / Chroma context", "patch_embed.text_proj.weight": "CogVideoX context",
                "context_embedder.weight": "SD3 context", "caption_projection.linear_1.weight": "LTX-Video context"}
T5_KEY = "encoder.final_layer_norm.weight"


@dataclass
class Requirement:
    model: ModelFile
    node_type: str
    path: Path | None = None


@dataclass
class WorkflowReport:
    name: str
    requirements: list[Requirement]
    fits: list[tuple[bool, str]] = field(default_factory=list)

    @property
    def missing(self) -> list[Requirement]:
        return [r for r in self.requirements if r.path is None]

    @property
    def ready(self) -> bool:
        return not self.missing and all(ok for ok, _ in self.fits)

    def render(self) -> str:
        state = "ready" if self.ready else "NOT READY"
        lines = [f"{self.name}: {state}"]
        for req in self.requirements:
            where = f"{req.model.folder}/{req.model.name}" + ("/" if req.model.is_folder else "")
            if req.path is not None:
                lines.append(f"  [ok]       {where}")
            else:
                lines += [f"  [missing]  {where}  (for {req.node_type})", f"             {req.model.guidance()}"]
        lines += [f"  [{'fits' if ok else 'MISMATCH'}]{' ' * (6 if ok else 2)} {text}" for ok, text in self.fits]
        return "\n".join(lines)


def _shape(header: dict[str, Any], names: tuple[str, ...]) -> list[int] | None:
    """Shape of the first tensor whose name is, or ends with ``.`` +, one of ``names`` (prefixes such as model.diffusion_model.)."""
    for key, entry in header.items():
        if key != "__metadata__" and any(key == n or key.endswith("." + n) for n in names):
            return list(entry["shape"])
    return None


def workflow_requirements(workflow: dict[str, Any]) -> list[Requirement]:
    """The model files a UI-format workflow loads (loader widgets; download links from ``properties.models``), deduplicated."""
    seen: dict[tuple[str, str], Requirement] = {}
    for node in workflow.get("nodes", []):
        node_type, values = node.get("type", ""), node.get("widgets_values") or []
        links = {link["name"]: link for link in (node.get("properties") or {}).get("models", [])}
        folder, positions, is_folder = LOADERS.get(node_type, ("", (), False))
        named = [(str(values[i]), folder) for i in positions if i < len(values) and isinstance(values[i], str)]
        named += [(name, link["directory"]) for name, link in links.items() if name not in dict(named)]
        for name, directory in named:
            model = describe(name, directory, links.get(name, {}).get("url", ""), is_folder=is_folder)
            seen.setdefault((model.folder, model.name), Requirement(model, node_type))
    return list(seen.values())


def locate(models_dir: Path, model: ModelFile) -> Path | None:
    for folder in FOLDER_ALIASES.get(model.folder, (model.folder,)):
        candidate = models_dir / folder / model.name
        if (candidate / "config.json").is_file() if model.is_folder else candidate.is_file():
            return candidate
    return None


def _widths(req: Requirement) -> dict[str, int]:
    """Named widths read from one present file: 'source' (VLM / vision hidden), 'aligner in/out', contexts, 'T5'."""
    path = req.path
    assert path is not None
    if req.model.is_folder:
        config = json.loads((path / "config.json").read_text())
        hidden = (config.get("text_config") or {}).get("hidden_size") or config.get("hidden_size")
        return {"source": int(hidden)} if hidden else {}
    if path.suffix.lower() not in (".safetensors", ".sft"):
        return {}
    header = read_header(path)
    metadata = header.get("__metadata__") or {}
    widths: dict[str, int] = {}
    if req.node_type == "ThinkDiffVisionLoader" and metadata.get("hidden_size"):
        widths["source"] = int(metadata["hidden_size"])
    if (shape_in := _shape(header, ALIGNER_IN)) and (shape_out := _shape(header, ALIGNER_OUT)):
        widths["aligner in"], widths["aligner out"] = shape_in[1], shape_out[0]
    for key, label in CONTEXT_KEYS.items():
        if shape := _shape(header, (key,)):
            widths[label] = shape[1]
    if shape := _shape(header, (T5_KEY,)):
        widths["T5"] = shape[0]
    return widths


def check_fit(requirements: list[Requirement]) -> list[tuple[bool, str]]:
    """Width checks between the present files; a check is skipped when a side is missing or unreadable."""
    found: dict[str, tuple[int, str]] = {}
    for req in requirements:
        if req.path is None:
            continue
        try:
            widths = _widths(req)
        except (ThinkDiffError, OSError, ValueError, KeyError) as e:
            found.setdefault("unreadable", (0, f"{req.model.name}: {e}"))
            continue
        for label, width in widths.items():
            found.setdefault(label, (width, req.model.name))
    fits: list[tuple[bool, str]] = []
    if "unreadable" in found:
        fits.append((False, f"cannot read {found['unreadable'][1]}"))
    pairs = [("source", "aligner in")] + [("aligner out", label) for label in (*CONTEXT_KEYS.values(), "T5")]
    for left, right in pairs:
        if left in found and right in found:
            (a, a_file), (b, b_file) = found[left], found[right]
            verdict = "=" if a == b else "!="
            text = f"{left} {a} ({a_file}) {verdict} {right} {b} ({b_file})".replace("source", "VLM/vision hidden size")
            fits.append((a == b, text if a == b else text + ": use the aligner trained for these models"))
    return fits


def shipped_workflows(pack_root: Path = PACK_ROOT) -> list[Path]:
    return sorted(p for folder in WORKFLOW_FOLDERS for p in (pack_root / folder).glob("*.json"))


def diagnose(comfyui: Path, workflows: list[Path]) -> list[WorkflowReport]:
    models_dir = comfyui / "models"
    reports = []
    for path in workflows:
        requirements = workflow_requirements(json.loads(path.read_text()))
        for req in requirements:
            req.path = locate(models_dir, req.model)
        reports.append(WorkflowReport(path.stem, requirements, check_fit(requirements)))
    return reports


def default_comfyui(pack_root: Path = PACK_ROOT) -> Path | None:
    """ComfyUI's folder when the pack sits in ``ComfyUI/custom_nodes/<pack>``."""
    return pack_root.parents[1] if pack_root.parent.name == "custom_nodes" else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--comfyui", type=Path, help="the ComfyUI folder (default: the one this pack is installed in)")
    parser.add_argument("--workflow", action="append", default=[], help="only this workflow (name or .json path); repeatable")


def pick_workflow(name: str, shipped: dict[str, Path]) -> Path:
    if Path(name).is_file():
        return Path(name)
    if Path(name).stem in shipped:
        return shipped[Path(name).stem]
    raise ThinkDiffError(f"no workflow {name!r}; shipped: {', '.join(shipped)}")


def comfyui_folder(given: Path | None) -> Path:
    """The ComfyUI folder to check: ``--comfyui`` or the one this pack is installed in; it must hold ``models/``."""
    comfyui = given or default_comfyui()
    if comfyui is None or not (comfyui / "models").is_dir():
        raise ThinkDiffError(f"no ComfyUI models folder at {comfyui}/models: pass --comfyui PATH (the folder holding models/)"
                             if comfyui else "this pack is not inside ComfyUI/custom_nodes: pass --comfyui PATH")
    return comfyui.resolve()


def run(args: argparse.Namespace) -> int:
    """Print a report per workflow; exit status 0 when every checked workflow is ready."""
    comfyui = comfyui_folder(args.comfyui)
    shipped = {path.stem: path for path in shipped_workflows()}
    workflows = [pick_workflow(name, shipped) for name in args.workflow] or list(shipped.values())
    reports = diagnose(comfyui, workflows)
    print(f"ComfyUI models folder: {comfyui / 'models'} (extra_model_paths.yaml is not read)\n")
    print("\n\n".join(report.render() for report in reports))
    ready = sum(r.ready for r in reports)
    fix = "" if ready == len(reports) else " Fetch what is missing with the same command and --fix."
    print(f"\n{ready} of {len(reports)} workflows ready. Nothing was downloaded.{fix}\n\n{advice()}")
    return 0 if ready == len(reports) else 1
