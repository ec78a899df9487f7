"""The comfyui backend's HTTP client against a stand-in server (the standard library's http.server in a thread): the
exact requests it sends and the messages of ComfyUI's refusals. tests/evaluation/test_generate_comfyui.py runs it against
a real ComfyUI."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import re
import socket
import threading
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

import evaluation.cobsat.comfy_client as comfy_client
from evaluation.cobsat.comfy_client import ComfyClient, _refusal
from thinkdiff.errors import ThinkDiffError

HINT = " (set [comfyui] vlm, aligner, unet, clip_l, t5, vae to names this ComfyUI lists)"


class StandIn:
    """Answers each path with the next of its scripted (status, body) answers (the last one again once they run out)
    and keeps every request as (method, path, headers, body)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[int, bytes]]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stand_in.requests.append((self.command, self.path, dict(self.headers), body))
                answers = stand_in.answers.get(self.path.split("?")[0], [(404, b"404: Not Found")])
                status, payload = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def script(self, path: str, *answers: tuple[int, object]) -> None:
        self.answers[path] = [(status, body if isinstance(body, bytes) else json.dumps(body).encode()) for status, body in answers]


@pytest.fixture
def stand_in():
    server = StandIn()
    yield server
    server.server.shutdown()
    server.server.server_close()


def raised(call, *args) -> str:
    with pytest.raises(ThinkDiffError) as error:
        call(*args)
    return str(error.value)


def test_a_client_has_its_own_id_and_the_url_without_its_slash():
    client = ComfyClient("http://127.0.0.1:8188/")
    assert (client.url, client.timeout_s) == ("http://127.0.0.1:8188", 1800.0)
    assert uuid.UUID(client.client_id).version == 4 and str(uuid.UUID(client.client_id)) == client.client_id
    assert ComfyClient("http://127.0.0.1:8188", 5.0).client_id != client.client_id
    assert ComfyClient("http://127.0.0.1:8188", 5.0).timeout_s == 5.0
    assert ComfyClient("http://COMFY-BOX//").url == "http://COMFY-BOX" and ComfyClient("http://BOX").url == "http://BOX"


def test_get_and_post_send_json(stand_in: StandIn):
    stand_in.script("/object_info", (200, {"KSampler": {"input": {}}}))
    stand_in.script("/prompt", (200, {"prompt_id": "p1", "number": 0}), (200, b""))
    client = ComfyClient(stand_in.url + "/")
    assert client.get("/object_info") == {"KSampler": {"input": {}}}
    assert client.post("/prompt", {"a": [1, "é"]}) == {"prompt_id": "p1", "number": 0}
    assert client.post("/prompt", {}) is None  # an empty answer
    (get, get_path, get_headers, get_body), (post, post_path, post_headers, post_body) = stand_in.requests[:2]
    assert (get, get_path, get_body) == ("GET", "/object_info", b"") and "Content-Type" not in get_headers
    assert (post, post_path, post_headers["Content-Type"]) == ("POST", "/prompt", "application/json")
    assert json.loads(post_body) == {"a": [1, "é"]}


def test_queue_sends_the_graph_with_the_client_id(stand_in: StandIn):
    stand_in.script("/prompt", (200, {"prompt_id": "abc-123", "number": 4, "node_errors": {}}))
    client = ComfyClient(stand_in.url)
    graph = {"1": {"class_type": "KSampler", "inputs": {"seed": 7}}}
    assert client.queue(graph) == "abc-123"
    ((method, path, headers, body),) = stand_in.requests
    assert (method, path, headers["Content-Type"]) == ("POST", "/prompt", "application/json")
    assert json.loads(body) == {"prompt": graph, "client_id": client.client_id}


def test_upload_image_sends_a_multipart_form(stand_in: StandIn):
    stand_in.script("/upload/image", (200, {"name": "blue_car.png", "subfolder": "cobsat/color_car", "type": "input"}),
                    (200, {"name": "red_car.png", "subfolder": "", "type": "input"}))
    client = ComfyClient(stand_in.url)
    data = b"\x89PNG\r\n\x1a\n\x00 not really"
    assert client.upload_image("blue_car.png", data, "cobsat/color_car") == "cobsat/color_car/blue_car.png"
    assert client.upload_image("red_car.png", data, "") == "red_car.png"  # no subfolder: the bare name
    (method, path, headers, body), second = stand_in.requests
    assert (method, path) == ("POST", "/upload/image")
    boundary = re.fullmatch("multipart/form-data; boundary=([0-9a-f]{32})", headers["Content-Type"]).group(1)
    assert second[2]["Content-Type"] != headers["Content-Type"]  # a new boundary per upload
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
    parts = [(part.get_param("name", header="content-disposition"), part.get_filename(), part.get_payload(decode=True))
             for part in form.iter_parts()]
    assert parts == [("subfolder", None, b"cobsat/color_car"), ("type", None, b"input"), ("overwrite", None, b"true"),
                     ("image", "blue_car.png", data)]
    assert list(form.iter_parts())[3]["Content-Type"] == "application/octet-stream"
    assert body == (f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\ncobsat/color_car\r\n'
                    f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'
                    f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'
                    f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="blue_car.png"\r\n'
                    'Content-Type: application/octet-stream\r\n\r\n').encode() + data + f"\r\n--{boundary}--\r\n".encode()


def test_view_fetches_the_image_as_rgb(stand_in: StandIn):
    picture = Image.fromarray(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), "RGBA")
    png = io.BytesIO()
    picture.save(png, format="PNG")
    stand_in.script("/view", (200, png.getvalue()))
    client = ComfyClient(stand_in.url)
    image = client.view({"filename": "ThinkDiff_00001_.png", "subfolder": "ThinkDiff/cobsat", "type": "output", "x": "y"})
    assert image.mode == "RGB" and np.asarray(image).tolist() == np.asarray(picture)[..., :3].tolist()
    client.view({"filename": "a b.png"})
    assert [request[1] for request in stand_in.requests] == [
        "/view?filename=ThinkDiff_00001_.png&subfolder=ThinkDiff%2Fcobsat&type=output", "/view?filename=a+b.png&subfolder=&type="]


def test_each_request_may_take_two_minutes(stand_in: StandIn, monkeypatch: pytest.MonkeyPatch):
    timeouts, urlopen = [], urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: timeouts.append(timeout) or urlopen(request))
    stand_in.script("/object_info", (200, {}))
    ComfyClient(stand_in.url, 5.0).get("/object_info")
    assert timeouts == [120]


def test_node_errors_are_one_per_node():
    answer = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
              "node_errors": {
                  "12": {"class_type": "UNETLoader", "errors": [
                      {"type": "value_not_in_list", "message": "Value not in list",
                       "details": "unet_name: 'flux1-dev.safetensors' not in ['tiny.safetensors']"}]},
                  "3": {"class_type": "ThinkDiffVLMEncode", "errors": [
                      {"type": "x", "message": "Required input is missing", "details": ""},
                      {"type": "y", "message": None, "details": "images"}, {"type": "z"}]}}}
    assert _refusal(json.dumps(answer).encode()) == (
        "UNETLoader: Value not in list: unet_name: 'flux1-dev.safetensors' not in ['tiny.safetensors']; "
        "ThinkDiffVLMEncode: Required input is missing; ThinkDiffVLMEncode: images; ThinkDiffVLMEncode: " + HINT)
    del answer["node_errors"]["12"]  # the hint only for a name not in a list
    assert _refusal(json.dumps(answer).encode()) == (
        "ThinkDiffVLMEncode: Required input is missing; ThinkDiffVLMEncode: images; ThinkDiffVLMEncode: ")


def test_a_refusal_without_node_errors_is_its_message_or_its_text():
    no_outputs = {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": ""}, "node_errors": {}}
    assert _refusal(json.dumps(no_outputs).encode()) == "Prompt has no outputs"
    assert _refusal(b'{"node_errors": {}}') == ""
    assert _refusal(b'{"node_errors": {}, "error": {"type": "not in list"}}') == ""
    for body in ('{"error": "bad"}', '["node_errors"]', '{"node_errors": {"1": "text"}}', '{"node_errors": {"1": {"class_type": '
                 '"A", "errors": ["text"]}}}', "500: Internal Server Error", "not JSON: {"):
        assert _refusal(body.encode()) == body
    assert _refusal(b"x" * 2500) == "x" * 2000
    assert _refusal(b"caf\xe9 \xff") == "caf\ufffd \ufffd"


def test_http_errors_carry_comfyuis_message(stand_in: StandIn):
    refusal = {"error": {"message": "Prompt outputs failed validation"}, "node_errors": {"4": {"class_type": "VAELoader", "errors": [
        {"message": "Value not in list", "details": "vae_name: 'ae.safetensors' not in []"}]}}}
    stand_in.script("/prompt", (400, refusal))
    stand_in.script("/history/p1", (500, b"500: Internal Server Error"))
    client = ComfyClient(stand_in.url)
    assert raised(client.queue, {}) == ("ComfyUI answered 400 to /prompt: VAELoader: Value not in list: vae_name: 'ae.safetensors' "
                                        "not in []" + HINT)
    assert raised(client.get, "/history/p1") == "ComfyUI answered 500 to /history/p1: 500: Internal Server Error"
    assert raised(client.get, "/missing") == "ComfyUI answered 404 to /missing: 404: Not Found"


def test_no_server_is_named():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    message = raised(ComfyClient(f"http://127.0.0.1:{port}/").get, "/object_info")
    assert re.fullmatch(rf"no ComfyUI server at http://127\.0\.0\.1:{port} \(\[Errno \d+\] Connection refused\): start ComfyUI "
                        r"with this pack installed, or set \[comfyui\] url", message), message


def finished(prompt_id: str, status: dict) -> dict:
    return {prompt_id: {"prompt": [], "outputs": {"9": {"images": [{"filename": "a.png"}]}}, "status": status}}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The polling's pauses, taken without waiting."""
    pauses: list[float] = []
    monkeypatch.setattr(comfy_client.time, "sleep", pauses.append)
    return pauses


def test_wait_polls_the_history_until_the_prompt_finished(stand_in: StandIn, sleeps: list[float]):
    done = finished("p1", {"status_str": "success", "completed": True, "messages": []})
    stand_in.script("/history/p1", (200, {}), (200, {"p1": {"prompt": []}}), (200, finished("p1", {"status_str": "running"})),
                    (200, done))
    assert ComfyClient(stand_in.url, 60.0).wait("p1") == done["p1"]
    assert [request[:2] for request in stand_in.requests] == [("GET", "/history/p1")] * 4 and sleeps == [0.2] * 3


@pytest.mark.parametrize(("status", "detail"), [
    ({"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p1"}],
        ["execution_error", {"node_type": "ThinkDiffVLMEncode", "exception_message": " min_pixels <= max_pixels\n"}],
        ["execution_error", {"exception_message": "the second"}]]}, "min_pixels <= max_pixels"),
    ({"status_str": "error", "completed": True, "messages": [["execution_interrupted", {}]]}, "error"),
    ({"status_str": "error", "completed": True}, "error"),
    ({"completed": True}, ""),
    ({"status_str": "error", "completed": False, "messages": [["execution_error", {"node_type": "KSampler"}]]}, ""),
])
def test_wait_reports_a_failed_prompt(stand_in: StandIn, sleeps: list[float], status: dict, detail: str):
    stand_in.script("/history/p1", (200, finished("p1", status)))
    assert raised(ComfyClient(stand_in.url).wait, "p1") == f"ComfyUI failed on prompt p1: {detail}"
    assert sleeps == []


def test_wait_gives_up_after_the_timeout(stand_in: StandIn):
    stand_in.script("/history/p1", (200, {}))
    client = ComfyClient(stand_in.url, 0.6)
    assert raised(client.wait, "p1") == "ComfyUI did not finish prompt p1 within 1 s ([comfyui] timeout_s)"
    assert 2 <= len(stand_in.requests) <= 4  # every 0.2 s
    stand_in.requests.clear()
    assert raised(ComfyClient(stand_in.url, 0.0).wait, "p1") == "ComfyUI did not finish prompt p1 within 0 s ([comfyui] timeout_s)"
    assert stand_in.requests == []
