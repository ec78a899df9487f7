"""Run ``python -m thinkdiff setup`` (and ``doctor --fix``): plan, check the disk, download, convert, move into place, report.

A file lands under ``ComfyUI/models`` only whole: downloads are verified in the cache, conversions write there too, and a
finished file or folder is then renamed into place (copied to a hidden ``.partial`` name first when the cache is on
another file system). A present file is never replaced unless it is damaged and ``--repair`` was given.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

from thinkdiff import doctor
from thinkdiff.aligner_files import convert_release_checkpoint
from thinkdiff.errors import ThinkDiffError
from thinkdiff.model_setup import BY_NAME, HUB, ModelFile
from thinkdiff.vision_extract import extract_blip2_vision

from .hub import HubError, cached_path, download
from .plan import GB, Task, check_space, damage, resolve_files

CACHE_FOLDER = ".thinkdiff_cache"  # beside models/, so that moving a finished file into models/ is a rename
# --variant lvlm / clip: that variant's Flux workflows (the paper's); the other models' files come with --workflow
VARIANTS = {"lvlm": "thinkdiff_lvlm_", "clip": "thinkdiff_clip_", "all": ""}
VARIANT_MODEL = "flux1-dev.safetensors"


def licence_message(repo_id: str, names: list[str]) -> str:
    return (f"{repo_id} is gated: accept its licence on {HUB}{repo_id} (logged in), then run `huggingface-cli login` "
            f"(or set HF_TOKEN to a read token) and run this command again. Not fetched: {', '.join(names)}.")


def offline_message(tasks: list[Task], reason: str) -> str:
    lines = [f"cannot reach the Hugging Face hub: {reason}. Nothing was downloaded. Missing:"]
    lines += [f"  {t.where}  <- {t.model.url}" for t in tasks]
    return "\n".join(lines + ["Run this command again when online (unset HF_HUB_OFFLINE), or put the files there by hand "
                              "(docs/models.md)."])


def uses(workflow: Path) -> set[str]:
    """The model files a workflow loads."""
    return {req.model.name for req in doctor.workflow_requirements(json.loads(workflow.read_text()))}


def selected_models(args: argparse.Namespace, comfyui: Path) -> tuple[list[ModelFile], list[Path]]:
    """The catalogue entries the selection needs (``--model`` names, or every model of the chosen workflows)."""
    if args.model:
        unknown = [name for name in args.model if name not in BY_NAME]
        if unknown:
            raise ThinkDiffError(f"unknown model {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
        return [BY_NAME[name] for name in args.model], []
    shipped = {path.stem: path for path in doctor.shipped_workflows()}
    if args.workflow:
        workflows = [doctor.pick_workflow(name, shipped) for name in args.workflow]
    elif args.variant:
        workflows = [path for stem, path in shipped.items() if stem.startswith(VARIANTS[args.variant])
                     and (args.variant == "all" or VARIANT_MODEL in uses(path))]
    else:
        raise ThinkDiffError("say what to fetch: --variant lvlm|clip|all, --workflow NAME or --model NAME")
    models: dict[tuple[str, str], ModelFile] = {}
    for report in doctor.diagnose(comfyui, workflows):
        for req in report.requirements:
            models.setdefault((req.model.folder, req.model.name), req.model)
    return list(models.values()), workflows


def plan_tasks(models: list[ModelFile], models_dir: Path, repair: bool) -> tuple[list[Task], list[str], list[ModelFile]]:
    """Tasks for what is missing (or damaged, with ``repair``), the damaged files left alone, and the by-hand entries."""
    tasks, left_alone, by_hand = [], [], []
    for model in models:
        present = doctor.locate(models_dir, model)
        target = present or models_dir / model.folder / model.name
        replace: set[str] = set()
        if present is not None:
            damaged, absent = damage(present, model.is_folder)
            for name, why in damaged.items():
                (replace.add(name) if repair else left_alone.append(f"{present / name if name else present}: {why}"))
            if not (replace or absent):
                continue
        if not model.fetch:
            by_hand.append(model)
        else:
            tasks.append(Task(model, target, replace))
    return tasks, left_alone, by_hand


def place(source: Path, target: Path) -> None:
    """Rename a finished file or folder into models/; across file systems copy to a hidden partial name, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        partial = target.with_name(f".{target.name}.partial")
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, partial)
        os.replace(partial, target)
        (shutil.rmtree if source.is_dir() else os.unlink)(source)


def complete(task: Task, cache: Path) -> str:
    """Download a task's files, convert where needed, move the result into place; a one-line summary."""
    listing = task.listing
    assert listing is not None
    paths = [download(cache, listing, remote) for remote in task.files]
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    size = f"{task.download_bytes / GB:.3f} GB"
    if task.model.fetch == "folder":
        if not task.target.exists():
            staging = work / task.model.name
            for remote, path in zip(task.files, paths, strict=True):
                place(path, staging / remote.path)
            place(staging, task.target)
        else:
            for remote, path in zip(task.files, paths, strict=True):
                place(path, task.target / remote.path)
        return f"fetched {task.where} ({len(paths)} files, {size})"
    if task.model.fetch == "file":
        place(paths[0], task.target)
        return f"fetched {task.where} ({size})"
    output = work / task.model.name
    if task.model.fetch == "release":
        variant = task.model.name.removeprefix("thinkdiff_").removesuffix(".safetensors")
        weights = convert_release_checkpoint(paths[0], output, variant=variant)
        place(output, task.target)
        return (f"fetched {listing.repo_id}/{task.files[0].path} ({size}, kept in {paths[0].parent}), "
                f"converted: {task.target} ({weights.describe()})")
    extract_blip2_vision(cached_path(cache, listing, task.files[0]).parent, output)
    place(output, task.target)
    for path in paths[2:]:
        path.unlink()  # the shards served only the extraction
    fetched = sum(f.size for f in task.files[2:])
    weights_total = fetched + sum(f.size for f in task.skipped)
    return (f"fetched {len(task.files) - 2} of {len(task.files) - 2 + len(task.skipped)} BLIP-2 weight shards: "
            f"{fetched:,} of {weights_total:,} bytes ({fetched / weights_total:.1%}; saved "
            f"{(weights_total - fetched) / GB:.3f} GB), extracted {task.target}")


def run(args: argparse.Namespace) -> int:
    """``setup``: exit status 0 when everything asked for is in place (and, for workflows, the doctor says ready)."""
    comfyui = doctor.comfyui_folder(args.comfyui)
    models_dir = comfyui / "models"
    cache = (args.cache or comfyui / CACHE_FOLDER).resolve()
    models, workflows = selected_models(args, comfyui)
    tasks, left_alone, by_hand = plan_tasks(models, models_dir, args.repair)
    failed: list[str] = []
    gated: dict[str, list[str]] = defaultdict(list)
    for task in list(tasks):
        try:
            resolve_files(task, cache)
        except HubError as e:
            if e.kind == "offline":
                raise ThinkDiffError(offline_message(tasks, e.detail)) from None
            tasks.remove(task)
            (gated[e.repo_id].append(task.model.name) if e.kind == "gated" else failed.append(f"{task.where}: {e}"))
        except ThinkDiffError as e:
            tasks.remove(task)
            failed.append(f"{task.where}: {e}")
    check_space(tasks, cache, models_dir)
    for number, task in enumerate(tasks):
        print(f"[{number + 1}/{len(tasks)}] {task.where} from {task.model.repo_id}")
        try:
            print("  " + complete(task, cache))
        except HubError as e:
            if e.kind == "offline":
                raise ThinkDiffError(offline_message(tasks[number:], e.detail)) from None
            (gated[e.repo_id].append(task.model.name) if e.kind == "gated" else failed.append(f"{task.where}: {e}"))
        except ThinkDiffError as e:
            failed.append(f"{task.where}: {e}")
    if not tasks:
        print("nothing to fetch: every selected file is present")
    for repo_id, names in gated.items():
        print(licence_message(repo_id, names))
    for line in left_alone:
        print(f"damaged, left as it is (run again with --repair to replace it): {line}")
    for model in by_hand:
        print(f"not fetched automatically: {model.guidance()}")
    for line in failed:
        print(f"failed: {line}")
    ready = True
    if workflows:
        reports = doctor.diagnose(comfyui, workflows)
        print("\n" + "\n\n".join(report.render() for report in reports))
        ready = all(report.ready for report in reports)
    return 0 if ready and not (gated or left_alone or by_hand or failed) else 1
