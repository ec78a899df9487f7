"""thinkdiff.atomic_files: a reader sees the old file or the whole new one, never a part."""

import os

import pytest

from thinkdiff.atomic_files import write_atomically, write_text_atomically


def test_a_failed_write_leaves_the_old_file_and_a_partial_named_by_the_process(tmp_path):
    path = tmp_path / "record.json"
    write_text_atomically(path, "old")

    def fail_halfway(partial):
        partial.write_text("ne", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail_halfway)
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir() if p != path] == [f"record.json.{os.getpid()}.tmp"]
    write_text_atomically(path, "new ü")
    assert path.read_text(encoding="utf-8") == "new ü"
