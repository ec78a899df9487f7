"""The few HTTP calls of ComfyUI's server API that the comfyui backend needs (urllib, no other dependency): JSON GET
and POST, image upload, queueing a prompt, waiting for its history entry, fetching an output image. A refusal becomes
a ThinkDiffError with ComfyUI's own message, one per node for a graph's node errors."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from PIL import Image

from thinkdiff.errors import ThinkDiffError


def _refusal(body: bytes) -> str:
    """ComfyUI's answer to a refused request; a graph's node errors one per node (``node type: message: details``)."""
    try:
        answer = json.loads(body)
        errors = [f"{node['class_type']}: " + ": ".join(filter(None, (error.get("message"), error.get("details"))))
                  for node in answer["node_errors"].values() for error in node["errors"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):  # not JSON, not UTF-8, not node errors
        return body.decode(errors="replace")[:2000]
    hint = " (set [comfyui] vlm, aligner, unet, clip_l, t5, vae to names this ComfyUI lists)" if "not in" in str(errors) else ""
    return "; ".join(errors or [answer.get("error", {}).get("message", "")]) + hint


class ComfyClient:
    """The few HTTP calls of ComfyUI's API this backend needs."""

    def __init__(self, url: str, timeout_s: float = 1800.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.client_id = str(uuid.uuid4())

    def _call(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            raise ThinkDiffError(f"ComfyUI answered {e.code} to {path}: {_refusal(e.read())}") from e
        except urllib.error.URLError as e:
            raise ThinkDiffError(f"no ComfyUI server at {self.url} ({e.reason}): start ComfyUI with this pack installed, "
                                 "or set [comfyui] url") from e

    def get(self, path: str) -> Any:
        return json.loads(self._call(path))

    def post(self, path: str, data: Any) -> Any:
        body = self._call(path, json.dumps(data).encode(), {"Content-Type": "application/json"})
        return json.loads(body) if body else None

    def upload_image(self, name: str, data: bytes, subfolder: str) -> str:
        """Put an image file into ComfyUI's input folder; returns the name LoadImage takes (``subfolder/name``)."""
        boundary = uuid.uuid4().hex
        fields = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
                  for key, value in (("subfolder", subfolder), ("type", "input"), ("overwrite", "true"))]
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        body = b"".join(fields) + head + data + f"\r\n--{boundary}--\r\n".encode()
        answer = json.loads(self._call("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue(self, graph: dict[str, Any]) -> str:
        return self.post("/prompt", {"prompt": graph, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str) -> dict[str, Any]:
        """The prompt's history entry once it has finished; raises with ComfyUI's message if it failed."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("completed") is not None:
                if status.get("status_str") != "success":
                    errors = [data for kind, data in status.get("messages", []) if kind == "execution_error"]
                    detail = errors[0].get("exception_message", "") if errors else status.get("status_str", "")
                    raise ThinkDiffError(f"ComfyUI failed on prompt {prompt_id}: {detail.strip()}")
                return entry
            time.sleep(0.2)
        raise ThinkDiffError(f"ComfyUI did not finish prompt {prompt_id} within {self.timeout_s:.0f} s ([comfyui] timeout_s)")

    def view(self, image: dict[str, str]) -> Image.Image:
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        return Image.open(io.BytesIO(self._call(f"/view?{query}"))).convert("RGB")
