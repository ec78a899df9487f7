"""ComfyUI's executor in this process (no HTTP server): the same graphs and results as ``ComfyServer.run``.

For mutation testing (``scripts/mutation.sh``): mutmut switches mutants inside one process, which a server process
cannot follow. ComfyUI keeps global state (args, folder paths, node registry, loaded models): one instance per process.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .comfy_pack import name_pack_functions_as_in_the_repository
from .comfy_server import RunResult
from .paths import COMFYUI


class _Server:
    """The attributes ComfyUI's executor touches on its PromptServer."""

    client_id = last_node_id = last_prompt_id = None
    sockets_metadata: dict = {}

    def send_sync(self, event: str, data: Any, sid: Any = None) -> None:
        pass

    def queue_updated(self) -> None:
        pass


_THIS_PROCESS: list[ComfyInProcess] = []


def comfy_in_this_process(make_base: Callable[[], Path]) -> ComfyInProcess:
    """The process's one ComfyInProcess, made on first use in a base from ``make_base``. ComfyUI's folder paths and node
    registry cannot be re-pointed, and mutmut runs its stats and clean passes as two pytest sessions in one process."""
    if not _THIS_PROCESS:
        _THIS_PROCESS.append(ComfyInProcess(make_base()))
    return _THIS_PROCESS[0]


class ComfyInProcess:
    def __init__(self, base: Path) -> None:
        self.base = base
        sys.path.insert(0, str(COMFYUI))
        import comfy.options

        comfy.options.enable_args_parsing(False)
        from comfy.cli_args import args

        args.cpu, args.base_directory, args.disable_api_nodes = True, str(base), True
        args.database_url = "sqlite:///:memory:"
        importlib.import_module("utils.extra_config")  # before nodes: nodes.py puts comfy/ first on sys.path
        # folder_paths computes its paths from args.base_directory when first imported; a test that mounted the pack
        # (tests/support/comfy_pack.py) may have imported it already, with no base: the pack would not be found.
        importlib.reload(importlib.import_module("folder_paths"))
        import execution

        import nodes

        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        name_pack_functions_as_in_the_repository()
        self.execution = execution
        self.executor = execution.PromptExecutor(_Server(), cache_type=execution.CacheType.CLASSIC,
                                                 cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})

    def run(self, graph: dict[str, Any]) -> RunResult:
        import folder_paths

        folder_paths.filename_list_cache.clear()  # model lists as a fresh /prompt would see them
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(prompt_id, graph, None))
        if not valid:
            raise ValueError(f"ComfyUI refused the graph: {error} {node_errors}")
        self.executor.reset()  # no node outputs cached from an earlier prompt: a mutant switched on since must run
        self.executor.execute(graph, prompt_id, {"client_id": "inprocess"}, outputs)
        status = {"status_str": "success" if self.executor.success else "error", "completed": True,
                  "messages": self.executor.status_messages}
        return RunResult({"outputs": self.executor.history_result.get("outputs", {}), "status": status}, self.base)
