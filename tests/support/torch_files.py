"""``torch.save`` files as other machines write them, objects whose unpickling would run code, and where a loaded
tensor's memory comes from."""

from __future__ import annotations

from pathlib import Path

import torch


class Gadget:
    """A pickled object whose loading would run ``call(*args)``."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return (self.call, self.args)


def save_as_on_first_gpu(obj: object, path: Path) -> Path:
    """``torch.save`` (legacy format) with every storage's location written as ``cuda:0``, as on a GPU machine."""
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    cpu = b"X\x03\x00\x00\x00cpu"  # the pickled location string (memoised: written once)
    assert data.count(cpu) == 1
    path.write_bytes(data.replace(cpu, b"X\x06\x00\x00\x00cuda:0"))
    return path


def mapped_files(tensor: torch.Tensor) -> list[str]:
    """The files whose memory mapping (Linux /proc/self/maps) holds the tensor's data."""
    ptr = tensor.untyped_storage().data_ptr()
    found = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= ptr < end and len(fields) == 6:
            found.append(fields[5])
    return found
