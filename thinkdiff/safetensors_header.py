"""A ``.safetensors`` file's header, read without torch: tensor names, shapes, metadata, and whether the file is whole.

A download that stopped early leaves a file whose header promises more bytes than it holds; safetensors then fails with
"incomplete metadata, file not fully covered". Checking the size against the header names the damaged file instead.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .errors import ThinkDiffError

MAX_HEADER_BYTES = 100 * 2**20


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header (tensor names, dtypes, shapes, data offsets, ``__metadata__``) without reading any tensor."""
    return _read(path)[0]


def _read(path: Path) -> tuple[dict[str, Any], int]:
    """The header and the number of bytes before the tensor data."""
    with open(path, "rb") as f:
        size_bytes = f.read(8)
        if len(size_bytes) != 8:
            raise ThinkDiffError(f"{path} is not a .safetensors file (too short)")
        (size,) = struct.unpack("<Q", size_bytes)
        if size > MAX_HEADER_BYTES:
            raise ThinkDiffError(f"{path} is not a .safetensors file (header of {size} bytes)")
        text = f.read(size)
    if len(text) < size:
        raise ThinkDiffError(f"{path} is truncated inside its header ({len(text) + 8:,} bytes)")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ThinkDiffError(f"{path} is not a .safetensors file ({e})") from e
    if not isinstance(header, dict):
        raise ThinkDiffError(f"{path} is not a .safetensors file (its header is not a table)")
    return header, 8 + size


def check_complete(path: Path, redo: str) -> dict[str, Any]:
    """The header of ``path``, after checking that the file holds every byte the header describes; ``redo`` is the fix."""
    try:
        header, data_start = _read(path)
    except ThinkDiffError as e:
        raise ThinkDiffError(f"{e}: the file is damaged; {redo}.") from e
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected, actual = data_start + max(ends, default=0), path.stat().st_size
    if actual < expected:
        raise ThinkDiffError(f"{path} is truncated ({actual:,} of {expected:,} bytes; an interrupted download or copy): {redo}.")
    return header
