"""thinkdiff.atomic_files: a reader sees the old file or the whole new one, never a part."""

import json
import os

import pytest

from tests.support.ascii_locale import python_in_ascii_locale
from thinkdiff.atomic_files import write_atomically, write_text_atomically
from thinkdiff.manifest import read_manifest


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


def test_text_is_utf_8_whatever_the_locale(tmp_path):
    """Under a C locale without UTF-8 mode (ASCII: a bare cluster node; Windows' cp1252 alike) the atomic writer and
    the manifest reader still use UTF-8. (Both are also called here, so that mutation testing runs this test on them.)"""
    settings = {"instruction": "Décris l’image"}
    write_text_atomically(tmp_path / "manifest.json", json.dumps(settings, ensure_ascii=False))
    code = ("import json, sys; from pathlib import Path; from thinkdiff.atomic_files import write_text_atomically; "
            "from thinkdiff.manifest import read_manifest; folder = Path(sys.argv[1]); settings = read_manifest(folder); "
            "settings['instruction'] += chr(252); (folder / 'out').mkdir(); "  # an ASCII command line
            "write_text_atomically(folder / 'out' / 'manifest.json', json.dumps(settings, ensure_ascii=False))")
    python_in_ascii_locale(code, str(tmp_path))
    assert (tmp_path / "out" / "manifest.json").read_bytes() == '{"instruction": "Décris l’imageü"}'.encode()
    assert read_manifest(tmp_path / "out") == {"instruction": "Décris l’imageü"}
