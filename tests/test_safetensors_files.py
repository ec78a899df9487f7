"""Our single-file .safetensors readers: the header without torch, the completeness check and every damaged file's
message (thinkdiff/safetensors_header.py, thinkdiff/safetensors_files.py)."""

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from thinkdiff.errors import ThinkDiffError
from thinkdiff.safetensors_files import read_safetensors
from thinkdiff.safetensors_header import MAX_HEADER_BYTES, check_complete, read_header

REDO = "download it again"


def raw_file(path: Path, header: bytes, data: bytes = b"", size: int | None = None) -> Path:
    """A file laid out as safetensors: the header's length (``size``, default its real one), the header, the data."""
    path.write_bytes(struct.pack("<Q", len(header) if size is None else size) + header + data)
    return path


@pytest.fixture
def saved(tmp_path) -> Path:
    """Two tensors (24 and 8 bytes) and metadata, written by safetensors itself."""
    tensors = {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.tensor([1.5, -2.0])}
    save_file(tensors, str(tmp_path / "two.safetensors"), metadata={"format": "test", "note": "x"})
    return tmp_path / "two.safetensors"


def test_the_header_is_read_without_the_tensors(saved):
    header = read_header(saved)
    assert header["__metadata__"] == {"format": "test", "note": "x"}
    assert {key: (entry["dtype"], entry["shape"]) for key, entry in header.items() if key != "__metadata__"} == {
        "a.bias": ("F32", [2]), "b.weight": ("F32", [2, 3])}
    assert sorted(entry["data_offsets"] for key, entry in header.items() if key != "__metadata__") == [[0, 8], [8, 32]]
    assert check_complete(saved, REDO) == header


def test_tensors_and_metadata_come_back_on_the_cpu(saved):
    metadata, tensors = read_safetensors(saved, REDO)
    assert metadata == {"format": "test", "note": "x"}
    assert sorted(tensors) == ["a.bias", "b.weight"]
    torch.testing.assert_close(tensors["b.weight"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    torch.testing.assert_close(tensors["a.bias"], torch.tensor([1.5, -2.0]))
    assert tensors["a.bias"].device == torch.device("cpu")


def test_a_file_without_metadata_or_tensors(tmp_path):
    save_file({"w": torch.ones(1)}, str(tmp_path / "plain.safetensors"))
    assert read_safetensors(tmp_path / "plain.safetensors", REDO)[0] == {}
    empty = raw_file(tmp_path / "empty.safetensors", b'{"__metadata__": {"k": "v"}}')
    assert read_safetensors(empty, REDO) == ({"k": "v"}, {})


def test_one_missing_byte_is_named_with_the_sizes(saved, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(saved.read_bytes()[:-1])
    size = saved.stat().st_size
    with pytest.raises(ThinkDiffError) as e:
        read_safetensors(cut, REDO)
    assert str(e.value) == (f"{cut} is truncated ({size - 1:,} of {size:,} bytes; an interrupted download or copy): "
                            "download it again.")


def test_a_header_offset_past_the_end_is_truncation(tmp_path):
    """The last data offset, not the first tensor's, sets the expected size; metadata has no offsets."""
    header = json.dumps({"__metadata__": {"k": "v"}, "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                         "b": {"dtype": "U8", "shape": [1500], "data_offsets": [2, 1502]}}).encode()
    path = raw_file(tmp_path / "short.safetensors", header, b"\x00" * 1000)
    actual, expected = 8 + len(header) + 1000, 8 + len(header) + 1502
    with pytest.raises(ThinkDiffError, match=rf"\({actual:,} of {expected:,} bytes;"):
        check_complete(path, REDO)


@pytest.mark.parametrize(("content", "reason"), [
    (b"\x01\x02\x03", "is not a .safetensors file (too short)"),
    (struct.pack("<Q", 2**63 + 5), f"is not a .safetensors file (header of {2**63 + 5} bytes)"),
    (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", f"is not a .safetensors file (header of {MAX_HEADER_BYTES + 1} bytes)"),
    (struct.pack("<Q", MAX_HEADER_BYTES) + b"{" * 1500, "is truncated inside its header (1,508 bytes)"),
    (struct.pack("<Q", 2) + b"[]", "is not a .safetensors file (its header is not a table)"),
    (struct.pack("<Q", 3) + b"{x}", "is not a .safetensors file (Expecting property name enclosed in double quotes: "
                                    "line 1 column 2 (char 1))"),
], ids=["too_short", "size_past_int64", "size_over_the_limit", "cut_in_the_header", "not_a_table", "not_json"])
def test_damaged_headers_are_named(tmp_path, content, reason):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ThinkDiffError) as e:
        read_header(path)
    assert str(e.value) == f"{path} {reason}"
    with pytest.raises(ThinkDiffError) as e:
        read_safetensors(path, REDO)
    assert str(e.value) == f"{path} {reason}: the file is damaged; download it again."


def test_a_complete_file_safetensors_cannot_read(tmp_path):
    """Sizes that add up around a dtype safetensors does not know: its own error, with the fix."""
    header = json.dumps({"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path = raw_file(tmp_path / "odd.safetensors", header, b"\x00" * 8)
    with pytest.raises(ThinkDiffError, match=r"^odd\.safetensors is not a readable \.safetensors file \(.+\); download it again\.$"):
        read_safetensors(path, REDO)
