"""The pack's node modules in this process, for tests of its ComfyUI adapters that need no executor.

ComfyUI imports the pack as a package (its ``nodes/`` use relative imports of ``thinkdiff/``); here the repository is
mounted as the package ``thinkdiff_pack`` without running its ``__init__`` (no nodes are registered), with ComfyUI's
``comfy`` importable and set to the CPU. The library classes must come from this package too (``pack.vlm``), so that
the node modules recognise them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import types
from pathlib import Path
from typing import Any

from .paths import COMFYUI, REPO

PACKAGE = "thinkdiff_pack"


def _package(name: str, path: str) -> None:
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module


@functools.cache
def pack() -> Any:
    """A namespace of the pack's modules: ``streaming``, ``comfy_models``, the node modules (``vlm_nodes``,
    ``clip_nodes``, ``conditioning_nodes``, ``t5_nodes``) and their helpers (``alignment``, ``text_encoding``), ``vlm``,
    ``aligner``, ``sampling_options``, ``weight_formats``, ``errors``; ComfyUI on the CPU."""
    return mount(cpu=True)


def mount(cpu: bool) -> Any:
    """:func:`pack`'s namespace, with ComfyUI on the CPU or on its default device (once per process)."""
    if str(COMFYUI) not in sys.path:
        sys.path.insert(0, str(COMFYUI))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = cpu
    _package(PACKAGE, str(REPO))
    _package(f"{PACKAGE}.nodes", str(REPO / "nodes"))  # without nodes/__init__: no registration, no other nodes
    names = {"streaming": "nodes.streaming", "comfy_models": "nodes.comfy_models", "vlm_nodes": "nodes.vlm_nodes",
             "clip_nodes": "nodes.clip_nodes", "conditioning_nodes": "nodes.conditioning_nodes", "t5_nodes": "nodes.t5_nodes",
             "alignment": "nodes.alignment", "text_encoding": "nodes.text_encoding", "aligner": "thinkdiff.aligner",
             "vlm": "thinkdiff.vlm", "sampling_options": "thinkdiff.sampling_options",
             "weight_formats": "thinkdiff.weight_formats", "errors": "thinkdiff.errors"}
    modules = types.SimpleNamespace(**{key: importlib.import_module(f"{PACKAGE}.{name}") for key, name in names.items()})
    if os.environ.get("THINKDIFF_INPROCESS") == "1":
        name_pack_functions_as_in_the_repository()
    return modules


def name_pack_functions_as_in_the_repository() -> None:
    """For mutation testing. ComfyUI imports the pack under its folder path, so ``nodes/alignment.py`` runs as
    ``<path>.nodes.alignment`` (here: ``thinkdiff_pack.nodes.alignment``); mutmut finds a function's mutants (and records
    which tests reach it) by ``__module__``, ``nodes.alignment`` in the repository. Give the pack's functions and methods
    (``nodes/``, and ``thinkdiff/`` as the pack imports it) that name."""
    for module in list(sys.modules.values()):
        file = Path(getattr(module, "__file__", None) or "/").resolve()
        if file.parent not in (REPO / "nodes", REPO / "thinkdiff"):
            continue
        name = file.parent.name if file.stem == "__init__" else f"{file.parent.name}.{file.stem}"
        for value in vars(module).values():
            members = vars(value).values() if isinstance(value, type) else [value]
            for member in members:
                function = getattr(member, "__func__", member)  # classmethods
                while inspect.isfunction(function) and function.__module__ == module.__name__:
                    function.__module__ = name
                    function = getattr(function, "__wrapped__", None)  # what a decorator (mutmut's trampoline) wraps
