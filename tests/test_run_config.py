"""thinkdiff.run_config: TOML files and ``section.key=value`` overrides into dataclass sections, on a small config of its
own (the training and evaluation configs are tested in tests/training and tests/evaluation)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from tests.support.ascii_locale import python_in_ascii_locale
from thinkdiff.errors import ThinkDiffError
from thinkdiff.run_config import ConfigFile, load_sections


@dataclasses.dataclass
class Source:
    path: str = ""
    weight: float = 1.0


@dataclasses.dataclass
class Data:
    name: str = "pairs"
    sizes: tuple[int, ...] = (1, 2)
    sources: list[Source] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Run:
    steps: int = 10
    rate: float = 0.5
    mode: Literal["fast", "exact"] = "exact"


@dataclasses.dataclass
class Settings(ConfigFile):
    data: Data = dataclasses.field(default_factory=Data)
    run: Run = dataclasses.field(default_factory=Run)


def refusal(*overrides: str, path: Path | None = None) -> str:
    with pytest.raises(ThinkDiffError) as refused:
        load_sections(Settings, path, overrides)
    return str(refused.value)


def test_paths_resolve_against_the_files_folder_and_an_empty_one_stays_empty(tmp_path):
    (tmp_path / "run.toml").write_text('[data]\nname = "x"\n')
    settings = load_sections(Settings, tmp_path / "run.toml")
    assert settings.path("shards/a.tar") == (tmp_path / "shards" / "a.tar").resolve()
    assert settings.path("") == Path()
    assert load_sections(Settings).base_dir == Path.cwd()


def test_the_sections_as_plain_data_leave_out_the_folder(tmp_path):
    settings = load_sections(Settings, None, ["data.sources=[{path = \"a\", weight = 2}]", "run.steps=3"])
    assert settings.to_dict() == {"data": {"name": "pairs", "sizes": (1, 2), "sources": [{"path": "a", "weight": 2.0}]},
                                  "run": {"steps": 3, "rate": 0.5, "mode": "exact"}}


def test_values_are_checked_and_converted_against_the_defaults():
    settings = load_sections(Settings, None, ["run.rate=1", "data.sizes=[3, 4, 5]", "run.mode=fast", "data.name=big set"])
    assert settings.run.rate == 1.0 and isinstance(settings.run.rate, float)  # an int for a float
    assert settings.data.sizes == (3, 4, 5) and settings.data.name == "big set"  # an array for a tuple; a bare string
    assert settings.run.mode == "fast" and type(load_sections(Settings, None, ["run.steps=3"]).run.steps) is int
    assert refusal("run.steps=true") == "[run] steps must be a int, got True"
    assert refusal("run.mode=slow") == "[run] mode must be one of fast, exact, got 'slow'"


def test_unknown_names_are_refused_with_the_known_ones():
    assert refusal("run.stepz=1", "run.ratez=2") == "unknown setting(s) in [run]: ratez, stepz; known: steps, rate, mode"
    assert refusal("tran.steps=1", "eval.x=2") == "unknown config section(s): eval, tran; known: data, run"


def test_arrays_of_tables_are_built_and_checked_by_their_number():
    assert refusal("data.sources=[1]") == "[data] sources must be a list of tables ([[data.sources]] with path/weight)"
    assert refusal('data.sources=[{path = "a"}, {path = "b", wait = 1}]') == (
        "unknown setting(s) in [data.sources #2]: wait; known: path, weight")
    sources = load_sections(Settings, None, ['data.sources=[{path = "a"}, {path = "b", weight = 3}]']).data.sources
    assert sources == [Source("a", 1.0), Source("b", 3.0)]


def test_an_override_needs_a_section_a_key_and_a_value():
    for bad in ("steps=1", "run.steps", "run.=1", ".steps=1"):
        assert refusal(bad) == f"override {bad!r} must look like section.key=value"
    # the first dot splits: the rest is the key
    assert refusal("run.steps.max=1") == "unknown setting(s) in [run]: steps.max; known: steps, rate, mode"


def test_an_unreadable_file_is_named_with_the_reason(tmp_path):
    (tmp_path / "bad.toml").write_text("[run\n")
    assert refusal(path=tmp_path / "bad.toml").startswith(f"cannot read config {tmp_path / 'bad.toml'}: ")
    assert refusal(path=tmp_path / "none.toml").startswith(f"cannot read config {tmp_path / 'none.toml'}: ")


def test_a_file_is_read_as_utf_8_whatever_the_locale(tmp_path):
    """Under a C locale without UTF-8 mode (a bare cluster node; Windows' cp1252 alike). (Also read here, so that mutation
    testing runs this test on the reader.)"""
    (tmp_path / "run.toml").write_text('[data]\nname = "Décris l’image"\n', encoding="utf-8")
    assert load_sections(Settings, tmp_path / "run.toml").data.name == "Décris l’image"
    code = ("import sys; from thinkdiff.run_config import read_tables; "
            "print(ascii(read_tables(sys.argv[1])[0]['data']['name']))")
    assert python_in_ascii_locale(code, str(tmp_path / "run.toml")).strip() == ascii("Décris l’image")
