"""The pack's node modules in this process, for tests of its ComfyUI adapters that need no executor.

ComfyUI imports the pack as a package (its ``nodes/`` use relative imports of ``thinkdiff/``); here the repository is
mounted as the package ``thinkdiff_pack`` without running its ``__init__`` (no nodes are registered), with ComfyUI's
``comfy`` importable and set to the CPU. The library classes must come from this package too (``pack.vlm``), so that
the node modules recognise them.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from typing import Any

from .paths import COMFYUI, REPO

PACKAGE = "thinkdiff_pack"


def _package(name: str, path: str) -> None:
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module


@functools.cache
def pack() -> Any:
    """A namespace of the pack's modules: ``streaming``, ``comfy_models``, ``vlm_nodes``, ``vlm``, ``sampling_options``,
    ``weight_formats``, ``errors``; ComfyUI on the CPU."""
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
             "vlm": "thinkdiff.vlm", "sampling_options": "thinkdiff.sampling_options",
             "weight_formats": "thinkdiff.weight_formats", "errors": "thinkdiff.errors"}
    return types.SimpleNamespace(**{key: importlib.import_module(f"{PACKAGE}.{name}") for key, name in names.items()})
