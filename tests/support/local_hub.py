"""A Hugging Face hub on 127.0.0.1 for tests: the endpoints ``huggingface_hub`` calls, over repositories held in memory.

- ``GET /api/models/<repo>[/revision/<rev>]`` (``?blobs=true``): id, sha (the commit), siblings with size, blobId and,
  for LFS files, ``lfs.sha256`` / ``lfs.size`` — what ``HfApi.model_info(files_metadata=True)`` reads.
- ``HEAD|GET /<repo>/resolve/<rev>/<path>``: ``X-Repo-Commit``, ``ETag`` (the git blob id, or the sha256 for LFS files,
  which also get ``X-Linked-Etag`` / ``X-Linked-Size``), ``Content-Length``, ``Accept-Ranges``; a ``Range: bytes=a-`` request
  is answered 206 with ``Content-Range``. Missing files: 404 with ``X-Error-Code: EntryNotFound``.
- A gated repository answers its files with 401 and ``X-Error-Code: GatedRepo`` unless the request carries its token
  (``Authorization: Bearer <token>``); its listing stays public, as on the real hub.

Every request is logged (method, path, Range, bytes sent); ``slow`` makes a file trickle out so a test can kill a client
midway, ``tamper`` sends other bytes than the listing's hash.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    token: str | None = None  # gated: only this token may download

    @property
    def commit(self) -> str:
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(path.encode() + hashlib.sha256(self.files[path]).digest())
        return digest.hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def blob_id(content: bytes) -> str:
    return hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()


def sibling(path: str, content: bytes) -> dict:
    entry = {"rfilename": path, "size": len(content), "blobId": blob_id(content)}
    if is_lfs(path):
        entry["lfs"] = {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
    return entry


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    sent: int


@dataclass
class LocalHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    slow: dict[str, float] = field(default_factory=dict)  # file path -> seconds per 4 kB chunk
    tamper: set[str] = field(default_factory=set)  # file paths served with their last byte flipped (listing unchanged)

    def add(self, repo: Repo) -> Repo:
        self.repos[repo.repo_id] = repo
        return repo

    def __enter__(self) -> LocalHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                hub.answer(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def sent(self, file_path: str) -> int:
        return sum(r.sent for r in self.log if r.path.endswith("/" + file_path))

    def requested(self, file_path: str) -> list[Request]:
        return [r for r in self.log if r.path.endswith("/" + file_path) and r.method == "GET"]

    def _repo_and_rest(self, path: str) -> tuple[Repo | None, str]:
        for repo_id, repo in self.repos.items():
            if path.startswith(repo_id + "/") or path == repo_id:
                return repo, path[len(repo_id) + 1:]
        return None, ""

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path).lstrip("/")
        request = Request(handler.command, path, handler.headers.get("Range"), 0)
        self.log.append(request)
        if path.startswith("api/models/"):
            repo, rest = self._repo_and_rest(path.removeprefix("api/models/"))
            if repo is None:
                return self._error(handler, 404, "RepoNotFound", "Repository not found")
            info = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
                    "gated": "manual" if repo.token else False,
                    "siblings": [sibling(p, c) for p, c in sorted(repo.files.items())]}
            return self._send(handler, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body, request)
        repo, rest = self._repo_and_rest(path)
        if repo is None or "/resolve/" not in "/" + rest:
            return self._error(handler, 404, "RepoNotFound", "Repository not found")
        revision, _, file_path = rest.removeprefix("resolve/").partition("/")
        if revision not in ("main", repo.commit):
            return self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if repo.token and handler.headers.get("Authorization") != f"Bearer {repo.token}":
            return self._error(handler, 401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have "
                               "access to it and be authenticated to access it. Please log in.")
        if file_path not in repo.files:
            return self._error(handler, 404, "EntryNotFound", f"{file_path} does not exist on main")
        content = repo.files[file_path]
        if file_path in self.tamper:
            content = content[:-1] + bytes([content[-1] ^ 1])
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if is_lfs(file_path):
            sha = hashlib.sha256(content).hexdigest()
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(content))})
        else:
            headers["ETag"] = f'"{blob_id(content)}"'
        status, start = 200, 0
        if request.range and request.range.startswith("bytes="):
            start = int(request.range.removeprefix("bytes=").split("-")[0])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        self._send(handler, status, content[start:], headers, body, request, self.slow.get(file_path, 0.0))

    def _error(self, handler: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        self._send(handler, status, json.dumps({"error": message}).encode(), headers, handler.command == "GET", None)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], body: bool,
              request: Request | None, delay: float = 0.0) -> None:
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if not body:
            return
        try:
            for offset in range(0, len(data), 4096 if delay else len(data) or 1):
                chunk = data[offset:offset + (4096 if delay else len(data))]
                handler.wfile.write(chunk)
                handler.wfile.flush()
                if request is not None:
                    request.sent += len(chunk)
                time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
