"""Drive a real ComfyUI server process: start it headless on the CPU, queue API graphs, read history."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from .paths import COMFYUI, REPO

PACK_NAME = "ComfyUI-ThinkDiff"
BINARY_TEXT = 3  # server.BinaryEventTypes.TEXT
TEST_PACKS = REPO / "tests" / "comfy_packs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base(base: Path, test_packs: tuple[str, ...] = ("tiny_model_loaders",)) -> Path:
    """A ComfyUI base directory with this pack (linked, as a git clone would sit) and the test packs."""
    for sub in ("models", "custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    for pack in test_packs:
        target = base / "custom_nodes" / pack
        if not target.exists():
            shutil.copytree(TEST_PACKS / pack, target)
    return base


class ComfyServer:
    """``with ComfyServer(base) as server: server.run(api_graph)``."""

    def __init__(self, base: Path, port: int | None = None, python: str = sys.executable) -> None:
        self.base, self.port, self.python = base, port or free_port(), python
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.client_id = str(uuid.uuid4())
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ComfyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 180) -> None:
        command = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(self.base), "--database-url", f"sqlite:///{self.base}/user/comfyui.db",
                   "--disable-api-nodes", "--preview-method", "none"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.process.returncode}):\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def post(self, path: str, data: Any) -> Any:
        request = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body else None

    def object_info(self) -> dict[str, Any]:
        return self.get("/object_info")

    def queue(self, graph: dict[str, Any]) -> str:
        """Queue an API graph; a validation error raises with ComfyUI's JSON answer."""
        try:
            return self.post("/prompt", {"prompt": graph, "client_id": self.client_id})["prompt_id"]
        except urllib.error.HTTPError as e:
            raise ValueError(f"ComfyUI refused the graph: {e.read().decode()}") from e

    def wait(self, prompt_id: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} not done after {timeout}s")

    def run(self, graph: dict[str, Any], timeout: float = 600) -> RunResult:
        return RunResult(self.wait(self.queue(graph), timeout), self.base)

    def run_watching(self, graph: dict[str, Any], on_event: Callable[[str, Any], None] | None = None,
                     timeout: float = 600) -> tuple[RunResult, list[tuple[str, Any]]]:
        """Run ``graph`` while listening on the websocket; returns the result and every event.

        Events are ``(type, data)``: JSON messages as sent, binary progress text as ``("progress_text", (node, text))``.
        ``on_event`` sees each event as it arrives (e.g. to interrupt).
        """
        return asyncio.run(self._watch(graph, on_event, timeout))

    async def _watch(self, graph, on_event, timeout):
        events: list[tuple[str, Any]] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{self.url}/ws?clientId={self.client_id}") as ws:
            prompt_id = await asyncio.to_thread(self.queue, graph)
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(message.data)
                    event = (data["type"], data.get("data"))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    event = _binary_event(message.data)
                else:
                    break
                events.append(event)
                if on_event:
                    await asyncio.to_thread(on_event, *event)
                if _finishes(event, prompt_id):
                    break
        return RunResult(await asyncio.to_thread(self.wait, prompt_id, timeout), self.base), events


def _finishes(event: tuple[str, Any], prompt_id: str) -> bool:
    kind, data = event
    if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
        return False
    return kind in ("execution_error", "execution_interrupted") or (kind == "executing" and data.get("node") is None)


def _binary_event(payload: bytes) -> tuple[str, Any]:
    kind = struct.unpack(">I", payload[:4])[0]
    if kind == BINARY_TEXT:
        length = struct.unpack(">I", payload[4:8])[0]
        return "progress_text", (payload[8:8 + length].decode(), payload[8 + length:].decode(errors="replace"))
    return f"binary_{kind}", None


class RunResult:
    """A finished prompt's history entry with helpers for what tests look at."""

    def __init__(self, entry: dict[str, Any], base: Path) -> None:
        self.entry, self.base = entry, base
        self.status = entry.get("status", {})

    @property
    def ok(self) -> bool:
        return self.status.get("status_str") == "success"

    def messages(self, kind: str) -> list[dict[str, Any]]:
        return [data for name, data in self.status.get("messages", []) if name == kind]

    @property
    def error(self) -> str:
        errors = self.messages("execution_error")
        return errors[0].get("exception_message", "") if errors else ""

    @property
    def cached_nodes(self) -> set[str]:
        return {node for data in self.messages("execution_cached") for node in data.get("nodes", [])}

    def images(self) -> list[Path]:
        return [self.base / "output" / image.get("subfolder", "") / image["filename"]
                for output in self.entry.get("outputs", {}).values() for image in output.get("images", [])
                if image.get("type") == "output"]

    def texts(self, node_id: str) -> list[str]:
        return self.entry.get("outputs", {}).get(node_id, {}).get("text", [])
