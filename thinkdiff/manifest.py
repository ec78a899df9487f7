"""A resumable run's ``manifest.json``: the settings a folder's files were made with, so that a rerun with other settings
cannot mix its files into the folder. Used by training's stage A (features) and CoBSAT's ``generate`` (images).

Checking and writing are separate steps: a run checks before it starts work and writes the manifest once it has made
something (a run that fails first leaves no manifest behind); an existing manifest is never rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .atomic_files import write_text_atomically
from .errors import ThinkDiffError

MANIFEST = "manifest.json"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's recorded settings; ``None`` if it has none."""
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def changed_settings(recorded: dict[str, Any], settings: dict[str, Any], pinned: Sequence[str] | None) -> list[str]:
    """The ``pinned`` keys (every key of either side when ``None``) whose values differ, sorted."""
    keys = set(recorded) | set(settings) if pinned is None else set(pinned)
    return sorted(k for k in keys if recorded.get(k) != settings.get(k))


def check_manifest(folder: Path, settings: dict[str, Any], pinned: Sequence[str] | None, fix: str) -> None:
    """Refuse ``settings`` if the folder's manifest records other values for them; writes nothing. ``fix`` says what
    to do instead (finishes the error message)."""
    recorded = read_manifest(folder)
    changed = changed_settings(recorded, settings, pinned) if recorded is not None else []
    if changed:
        raise ThinkDiffError(f"{folder} holds files made with other settings ({', '.join(changed)} differ): {fix}")


def write_manifest_if_new(folder: Path, settings: dict[str, Any]) -> bool:
    """Record ``settings`` in a folder without a manifest (made if missing); whether it wrote one."""
    if (folder / MANIFEST).is_file():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(folder / MANIFEST, json.dumps(settings, indent=1))
    return True
