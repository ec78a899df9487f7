"""One TOML file per run plus ``--set section.key=value`` overrides, read into dataclass sections.

For the offline tools (``training``, ``evaluation``); nothing in the ComfyUI nodes uses it. A config class is a
dataclass whose fields are section dataclasses (each with a default factory) and ``base_dir``, the folder that
relative paths are resolved against (the config file's folder, else the working directory).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from .errors import ThinkDiffError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

Config = TypeVar("Config", bound="ConfigFile")


@dataclasses.dataclass
class ConfigFile:
    """Base of a run's config: its sections are the subclass's fields; ``base_dir`` is the folder relative paths in the
    file are resolved against (the config file's folder, else the working directory)."""

    base_dir: Path = Path(".")

    def path(self, value: str) -> Path:
        """``value`` resolved against the config file's folder."""
        return (self.base_dir / value).resolve() if value else Path()

    def to_dict(self) -> dict[str, Any]:
        """The sections as plain data (for records and checkpoints)."""
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "base_dir"}


def parse_value(text: str) -> Any:
    """A TOML value (``3``, ``1e-4``, ``true``, ``["a"]``, ``"x"``); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def build_section(cls: type, values: dict[str, Any], name: str) -> Any:
    """``cls(**values)`` after checking names and types against ``cls``'s defaults (ints are accepted as floats), values of
    ``Literal`` fields against their choices, and building ``list[<dataclass>]`` fields from arrays of tables."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ThinkDiffError(f"unknown setting(s) in [{name}]: {', '.join(unknown)}; known: {', '.join(known)}")
    defaults, hints = cls(), typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        item = typing.get_args(hints[key])[0] if typing.get_origin(hints[key]) is list else None
        if dataclasses.is_dataclass(item):  # an array of tables, e.g. [[data.sources]]
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ThinkDiffError(f"[{name}] {key} must be a list of tables ([[{name}.{key}]] with "
                                     f"{'/'.join(f.name for f in dataclasses.fields(item))})")
            value = [build_section(item, dict(table), f"{name}.{key} #{number}") for number, table in enumerate(value, 1)]
        elif isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(default) is not type(value):
            raise ThinkDiffError(f"[{name}] {key} must be a {type(default).__name__}, got {value!r}")
        choices = typing.get_args(hints[key]) if typing.get_origin(hints[key]) is Literal else ()
        if choices and value not in choices:
            raise ThinkDiffError(f"[{name}] {key} must be one of {', '.join(map(str, choices))}, got {value!r}")
        checked[key] = value
    return cls(**checked)


def read_tables(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, dict[str, Any]], Path]:
    """The TOML file's tables with the overrides applied, and the folder relative paths are resolved against."""
    tables: dict[str, dict[str, Any]] = {}
    base_dir = Path.cwd()
    if path:
        path = Path(path)
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ThinkDiffError(f"cannot read config {path}: {e}") from e
        base_dir = path.resolve().parent
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not (sep and section and dot and name):
            raise ThinkDiffError(f"override {item!r} must look like section.key=value")
        tables.setdefault(section, {})[name] = parse_value(value.strip())
    return tables, base_dir


def load_sections(config_cls: type[Config], path: str | Path | None = None,
                  overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a TOML config (or only defaults) into ``config_cls`` and apply ``section.key=value`` overrides."""
    tables, base_dir = read_tables(path, overrides)
    sections = {f.name: f.default_factory for f in dataclasses.fields(config_cls) if f.name != "base_dir"}
    unknown = sorted(set(tables) - set(sections))
    if unknown:
        raise ThinkDiffError(f"unknown config section(s): {', '.join(unknown)}; known: {', '.join(sections)}")
    return config_cls(**{name: build_section(type(factory()), tables.get(name, {}), name) for name, factory in sections.items()},
                      base_dir=base_dir)
