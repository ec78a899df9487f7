"""Files that readers see whole or not at all (resumable runs take a file's presence as "this step finished")."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(partial)`` beside ``path``, then rename it to ``path``. The partial name holds the process id, so
    processes writing the same file never share one."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(partial)
    os.replace(partial, path)


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))
