"""What ``setup`` will fetch: the catalogue entries to obtain, their files on the hub, what is damaged, the bytes it takes.

Everything here runs before any weight byte moves: present files are checked locally (a folder's index against its
shards, every ``.safetensors`` against its own header, the doctor's truncation check), the hub is asked for listings
(sizes and hashes) and, for BLIP-2, for its ``model.safetensors.index.json`` (a few kB) to find the shards that hold the
vision tower. The disk-space check then compares the bytes needed with the bytes free on each file system involved.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub.utils import filter_repo_objects

from thinkdiff.errors import ThinkDiffError
from thinkdiff.model_setup import ModelFile
from thinkdiff.safetensors_header import check_complete
from thinkdiff.vision_extract import PREFIX as VISION_PREFIX

from .hub import Listing, RemoteFile, cached_path, download, list_repo

# The files a model folder needs (weights, index, configs, tokenizer, chat template); never README, LICENSE, .gitattributes.
FOLDER_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "merges.txt")
SAFETENSORS_INDEX = "model.safetensors.index.json"
GB = 1e9


@dataclass
class Task:
    """One catalogue entry to obtain into ``target`` (``models/<folder>/<name>``)."""

    model: ModelFile
    target: Path
    replace: set[str] = field(default_factory=set)  # damaged present files to replace (relative to a folder; "" = the file)
    listing: Listing | None = None
    files: list[RemoteFile] = field(default_factory=list)
    skipped: list[RemoteFile] = field(default_factory=list)  # BLIP-2 shards without vision weights: not fetched

    @property
    def where(self) -> str:
        return f"models/{self.model.folder}/{self.model.name}" + ("/" if self.model.is_folder else "")

    @property
    def download_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def output_bytes(self) -> int:
        """An upper bound of what a conversion writes: the converted file is never larger than its source."""
        if self.model.fetch in ("release", "vision"):
            return sum(f.size for f in self.files if f.path.endswith((".pth", ".safetensors")))
        return 0


def damage(path: Path, is_folder: bool) -> tuple[dict[str, str], set[str]]:
    """Damaged files of a present model (relative name -> why) and, for a folder, the shards its index names that are absent."""
    redo = "run setup again with --repair"
    damaged: dict[str, str] = {}
    absent: set[str] = set()
    files = sorted(path.glob("*.safetensors")) if is_folder else [path]
    if is_folder and (path / SAFETENSORS_INDEX).is_file():
        try:
            shards = set(json.loads((path / SAFETENSORS_INDEX).read_text())["weight_map"].values())
        except (ValueError, KeyError) as e:
            damaged[SAFETENSORS_INDEX] = f"unreadable index ({e})"
            shards = set()
        absent = {s for s in shards if not (path / s).is_file()}
    for file in files:
        if file.suffix == ".safetensors":
            try:
                check_complete(file, redo)
            except (ThinkDiffError, OSError) as e:
                damaged[file.name if is_folder else ""] = str(e)
    return damaged, absent


def _release_file(listing: Listing, name: str) -> RemoteFile:
    """A release checkpoint wherever the repository keeps it (at the top or under ``release/``)."""
    found = sorted((f for f in listing.files.values() if Path(f.path).name == name), key=lambda f: len(f.path))
    if not found:
        raise ThinkDiffError(f"{listing.repo_id} has no {name} (files: {', '.join(sorted(listing.files)) or 'none'})")
    return found[0]


def _vision_shards(task: Task, cache: Path) -> None:
    """BLIP-2: config + index, and only the shards whose tensors include ``vision_model.*`` (the index says which)."""
    listing = task.listing
    assert listing is not None
    if SAFETENSORS_INDEX not in listing.files:
        raise ThinkDiffError(f"{listing.repo_id} has no {SAFETENSORS_INDEX}: cannot tell which shards hold the vision tower")
    index = json.loads(download(cache, listing, listing.files[SAFETENSORS_INDEX]).read_text())
    shards = set(index["weight_map"].values())
    wanted = {file for key, file in index["weight_map"].items() if key.startswith(VISION_PREFIX)}
    task.files = [listing.files["config.json"], listing.files[SAFETENSORS_INDEX]] + [listing.files[s] for s in sorted(wanted)]
    task.skipped = [listing.files[s] for s in sorted(shards - wanted)]


def resolve_files(task: Task, cache: Path) -> None:
    """Fill ``task.listing`` and ``task.files`` from the hub (a present file of a folder is kept unless it is damaged)."""
    task.listing = listing = list_repo(task.model.repo_id)
    kind = task.model.fetch
    if kind == "folder":
        allowed = filter_repo_objects(sorted(listing.files), allow_patterns=list(FOLDER_PATTERNS))
        task.files = [listing.files[p] for p in allowed if p in task.replace or not (task.target / p).exists()]
    elif kind == "file":
        if task.model.hub_file not in listing.files:
            raise ThinkDiffError(f"{listing.repo_id} has no {task.model.hub_file}")
        task.files = [listing.files[task.model.hub_file]]
    elif kind == "release":
        task.files = [_release_file(listing, task.model.release_file)]
    elif kind == "vision":
        _vision_shards(task, cache)


def still_to_download(tasks: list[Task], cache: Path) -> int:
    """Bytes not yet in the cache (a partial from an interrupted run counts with what it already holds)."""
    total = 0
    for task in tasks:
        assert task.listing is not None
        for remote in task.files:
            done = cached_path(cache, task.listing, remote)
            partial = done.with_name(done.name + ".partial")
            if not done.is_file():
                total += remote.size - (partial.stat().st_size if partial.is_file() else 0)
    return total


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_space(tasks: list[Task], cache: Path, models: Path) -> None:
    """Refuse, before any weight byte moves, when a file system lacks the room for the downloads and converted files."""
    downloads, outputs = still_to_download(tasks, cache), sum(t.output_bytes for t in tasks)
    placed = sum(t.download_bytes for t in tasks if t.model.fetch in ("folder", "file")) + outputs
    cache_fs, models_fs = _existing(cache), _existing(models)
    same = cache_fs.stat().st_dev == models_fs.stat().st_dev
    needs = {cache_fs: downloads + outputs} if same else {cache_fs: downloads + outputs, models_fs: placed}
    for where, needed in needs.items():
        free = free_bytes(where)
        if needed > free:
            raise ThinkDiffError(
                f"not enough disk space on {where}: this needs {needed / GB:.2f} GB (downloads {downloads / GB:.2f} GB, "
                f"converted files at most {outputs / GB:.2f} GB), {free / GB:.2f} GB are free. Free some space, or pass "
                "--cache DIR on a bigger disk. Nothing was downloaded.")
