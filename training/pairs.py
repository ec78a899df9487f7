"""Image-text pairs from a captions file (jsonl/csv) beside an image folder, or WebDataset tar shards.

Both sources are indexed once (tar headers are read, member data is not) and then read by random
access, so any permutation can be streamed and a run can restart at any position. A bad sample
(unreadable image, empty caption) yields ``None``; the consumer skips and counts it.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from thinkdiff.errors import ThinkDiffError

from .config import Config

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
TEXT_EXTENSIONS = ("json", "txt")  # a .json's caption first, as MiniGPT-4 reads cc_sbu and LAION


@dataclass(frozen=True)
class Pair:
    key: str
    image: Image.Image  # RGB
    caption: str


@dataclass(frozen=True)
class _FileEntry:
    key: str
    image: Path
    caption: str


@dataclass(frozen=True)
class _TarMember:
    offset: int
    size: int
    extension: str


@dataclass(frozen=True)
class _TarEntry:
    key: str
    tar: Path
    image: _TarMember
    text: _TarMember | None


def read_captions_file(captions: Path, images: Path) -> list[_FileEntry]:
    """Entries of a ``.jsonl`` (one ``{"image", "caption"}`` object per line) or ``.csv`` (columns image, caption)."""
    if captions.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in captions.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif captions.suffix.lower() == ".csv":
        with captions.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ThinkDiffError(f"{captions}: captions must be a .jsonl or .csv file")
    return [_FileEntry(key=Path(row["image"]).stem, image=images / row["image"], caption=str(row.get("caption") or ""))
            for row in rows]


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def index_tar(path: Path) -> list[_TarEntry]:
    """One entry per key that has an image, with where its image and caption bytes lie."""
    members: dict[str, dict[str, _TarMember]] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            if info.isfile():
                key, extension = _split_name(info.name)
                members.setdefault(key, {})[extension] = _TarMember(info.offset_data, info.size, extension)
    entries = []
    for key, found in members.items():
        image = next((found[e] for e in IMAGE_EXTENSIONS if e in found), None)
        if image is not None:
            entries.append(_TarEntry(key, path, image, next((found[e] for e in TEXT_EXTENSIONS if e in found), None)))
    return entries


def _read_member(path: Path, member: _TarMember) -> bytes:
    with path.open("rb") as f:
        f.seek(member.offset)
        return f.read(member.size)


def _caption_from_text(data: bytes, extension: str) -> str:
    text = data.decode("utf-8", errors="replace")
    if extension == "json":
        value = json.loads(text)
        return str(value.get("caption") or value.get("text") or "") if isinstance(value, dict) else ""
    return text


def _open_rgb(source: Path | bytes) -> Image.Image:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return image.convert("RGB")


def source_entries(captions: Path | None = None, images: Path | None = None, shards: list[str] = ()) -> list[_FileEntry | _TarEntry]:
    """The entries of one source: a captions file (with its image folder) and/or tar shards (files or glob patterns)."""
    entries: list[_FileEntry | _TarEntry] = []
    if captions:
        entries.extend(read_captions_file(captions, images or captions.parent))
    for pattern in shards:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            entries.extend(index_tar(Path(path)))
    return entries


class PairDataset(Dataset):
    """Random-access image-text pairs of one or more sources, one after the other; ``dataset[i]`` is a :class:`Pair` or
    ``None`` for a bad sample. ``sizes`` are the sources' lengths."""

    def __init__(self, sources: list[list[_FileEntry | _TarEntry]], require_caption: bool = True) -> None:
        for number, entries in enumerate(sources, 1):
            if not entries:
                raise ThinkDiffError(f"no image-text pairs found in data source {number}: check its captions/images/shards paths")
        if not sources:
            raise ThinkDiffError("no image-text pairs found: set [data] captions (with images) or shards, or [[data.sources]]")
        self.entries = [entry for entries in sources for entry in entries]
        self.sizes = [len(entries) for entries in sources]
        self.require_caption = require_caption

    @classmethod
    def from_paths(cls, captions: Path | None = None, images: Path | None = None, shards: list[str] = (),
                   require_caption: bool = True) -> PairDataset:
        return cls([source_entries(captions, images, shards)], require_caption)

    def __len__(self) -> int:
        return len(self.entries)

    def key(self, index: int) -> str:
        return self.entries[index].key

    def __getitem__(self, index: int) -> Pair | None:
        entry = self.entries[index]
        try:
            if isinstance(entry, _FileEntry):
                image, caption = _open_rgb(entry.image), entry.caption
            else:
                image = _open_rgb(_read_member(entry.tar, entry.image))
                caption = _caption_from_text(_read_member(entry.tar, entry.text), entry.text.extension) if entry.text else ""
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            return None
        caption = caption.strip()
        if self.require_caption and not caption:
            return None
        return Pair(entry.key, image, caption)


def pairs_from_config(config: Config, require_caption: bool = True) -> PairDataset:
    """Every ``[data]`` source, in order (``sizes`` tells them apart; their ``weight`` is the trainer's business)."""
    sources = [source_entries(config.path(source.captions) if source.captions else None,
                              config.path(source.images) if source.images else None,
                              [str(config.path(pattern)) for pattern in source.shards])
               for source in config.data.all_sources()]
    return PairDataset(sources, require_caption)
