"""thinkdiff.manifest: checking a folder's settings writes nothing; writing records them once and never rewrites them."""

import json

import pytest

from thinkdiff.errors import ThinkDiffError
from thinkdiff.manifest import changed_settings, check_manifest, read_manifest, write_manifest_if_new

SETTINGS = {"seed": 3, "top_p": 0.9, "path": "/data/a"}


def test_checking_a_new_folder_passes_and_writes_nothing(tmp_path):
    check_manifest(tmp_path / "new", SETTINGS, None, "unused")
    assert not (tmp_path / "new").exists() and read_manifest(tmp_path / "new") is None


def test_the_manifest_is_written_once_and_never_rewritten(tmp_path):
    folder = tmp_path / "a" / "b"
    assert write_manifest_if_new(folder, SETTINGS)
    assert json.loads((folder / "manifest.json").read_text()) == SETTINGS == read_manifest(folder)
    assert not write_manifest_if_new(folder, {**SETTINGS, "path": "/data/b"})
    assert read_manifest(folder) == SETTINGS
    assert [p.name for p in folder.iterdir()] == ["manifest.json"]


def test_only_the_pinned_settings_must_match(tmp_path):
    write_manifest_if_new(tmp_path, SETTINGS)
    check_manifest(tmp_path, {**SETTINGS, "path": "/moved"}, ("seed", "top_p"), "unused")
    with pytest.raises(ThinkDiffError, match=r"holds files made with other settings \(seed, top_p differ\): start over"):
        check_manifest(tmp_path, {**SETTINGS, "seed": 4, "top_p": 1.0, "path": "/moved"}, ("top_p", "seed"), "start over")
    assert read_manifest(tmp_path) == SETTINGS  # a refused check leaves the folder as it was


def test_without_pins_every_key_of_either_side_counts():
    assert changed_settings(SETTINGS, SETTINGS, None) == []
    assert changed_settings(SETTINGS, {"seed": 3, "top_p": 0.9}, None) == ["path"]  # a setting gone
    assert changed_settings({"seed": 3}, {"seed": 3, "steps": 2}, None) == ["steps"]  # a setting added
    assert changed_settings(SETTINGS, {"seed": 3}, ("seed",)) == []
    assert changed_settings(SETTINGS, {"seed": 3}, ("seed", "steps")) == []  # absent on both sides: equal
