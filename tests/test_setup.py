"""``python -m thinkdiff setup`` with the real huggingface_hub client against a local hub (tests/support/local_hub.py)
serving tiny repositories in the real layouts (tests/support/tiny_hub.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support.comfy_server import ComfyServer, prepare_base
from tests.support.local_hub import LocalHub
from tests.support.paths import REPO
from tests.support.tiny_comfy import WORKFLOWS, swap_to_tiny
from tests.support.tiny_hub import EXTRAS, FLUX_TOKEN, TinyHub, build
from thinkdiff.aligner_files import load_aligner_weights
from thinkdiff.workflow_api import ui_to_api

QWEN = "Qwen/Qwen2-VL-7B-Instruct"
LVLM_FILES = ("LLM/Qwen2-VL-7B-Instruct", "thinkdiff/thinkdiff_lvlm.safetensors", "diffusion_models/flux1-dev.safetensors",
              "vae/ae.safetensors", "text_encoders/clip_l.safetensors", "text_encoders/t5xxl_fp16.safetensors")
FAKE_FREE_DISK = ("import collections, shutil, sys; shutil.disk_usage = lambda path: collections.namedtuple('usage', "
                  "'total used free')(10**12, 10**12 - 1000, 1000); from thinkdiff.__main__ import main; "
                  "sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyHub:
    return build(tmp_path_factory.mktemp("tiny_hub"))


@pytest.fixture()
def hub(tiny):
    with LocalHub() as server:
        for repo in tiny.repos:
            server.add(repo)
        yield server


def comfyui(tmp_path: Path) -> Path:
    (tmp_path / "ComfyUI" / "models").mkdir(parents=True)
    return tmp_path / "ComfyUI"


def command(hub: LocalHub, base: Path, *args: str, token: str | None = FLUX_TOKEN, python: tuple[str, ...] = ("-m", "thinkdiff"),
            **env: str) -> list[str] | dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    environ.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(base.parent / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", **env)
    if token:
        environ["HF_TOKEN"] = token
    return {"args": [sys.executable, *python, "setup", "--comfyui", str(base), *args], "cwd": REPO, "env": environ}


def setup(hub: LocalHub, base: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(**command(hub, base, *args, **kwargs), capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def doctor(base: Path, *workflows: str) -> subprocess.CompletedProcess:
    args = [a for w in workflows for a in ("--workflow", w)]
    return subprocess.run([sys.executable, "-m", "thinkdiff", "doctor", "--comfyui", str(base), *args], cwd=REPO,
                          capture_output=True, text=True)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def resolved(hub: LocalHub) -> list[str]:
    return [r.path for r in hub.log if r.method == "GET" and "/resolve/" in r.path]


def test_a_fresh_install_gets_exactly_the_lvlm_files_and_the_doctor_says_ready(hub, tiny, tmp_path):
    base = comfyui(tmp_path)
    result = setup(hub, base, "--variant", "lvlm")
    assert result.returncode == 0, result.stdout + result.stderr
    models = base / "models"
    qwen = next(r for r in tiny.repos if r.repo_id == QWEN)
    QWEN_FETCHED = set(qwen.files) - set(EXTRAS)  # noqa: N806  (what this transformers' save_pretrained wrote)
    assert "model-00002-of-00002.safetensors" in QWEN_FETCHED and "model.safetensors.index.json" in QWEN_FETCHED
    assert files_under(models / "LLM" / "Qwen2-VL-7B-Instruct") == QWEN_FETCHED  # allow-listed: no README/LICENSE
    for name in QWEN_FETCHED:
        assert (models / "LLM" / "Qwen2-VL-7B-Instruct" / name).read_bytes() == qwen.files[name]
    assert files_under(models) == {str(Path(f) / n) for n in QWEN_FETCHED for f in LVLM_FILES[:1]} | set(LVLM_FILES[1:])
    fetched = resolved(hub)
    assert not [p for p in fetched if p.endswith(("README.md", "LICENSE", ".gitattributes", "fp8_e4m3fn.safetensors",
                                                   "diffusion_pytorch_model.safetensors", "thinkdiff_clip.pth"))]
    # the release checkpoint: converted with the safe converter to exactly the aligner; the .pth stays in the cache
    weights = load_aligner_weights(models / "thinkdiff" / "thinkdiff_lvlm.safetensors")
    for key, tensor in tiny.aligners["lvlm"].state_dict().items():
        assert torch.equal(weights.state[key], tensor), key
    assert weights.metadata["variant"] == "lvlm"
    assert list((base / ".thinkdiff_cache").rglob("thinkdiff_lvlm.pth"))
    ready = doctor(base, "thinkdiff_lvlm_in_context", "thinkdiff_lvlm_image_instruction", "thinkdiff_lvlm_image_plus_text")
    assert ready.returncode == 0 and "3 of 3 workflows ready" in ready.stdout, ready.stdout
    hub.log.clear()
    again = setup(hub, base, "--variant", "lvlm")
    assert again.returncode == 0 and "nothing to fetch" in again.stdout and hub.log == []  # no request at all


def test_blip2_only_the_shards_holding_the_vision_tower(hub, tiny, tmp_path):
    base = comfyui(tmp_path)
    result = setup(hub, base, "--model", "blip2_vision.safetensors")
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = {Path(p).name for p in resolved(hub) if "blip2" in p}
    assert fetched == {"config.json", "model.safetensors.index.json", "model-00001-of-00004.safetensors",
                       "model-00002-of-00004.safetensors"}
    blip2 = next(r for r in tiny.repos if r.repo_id.startswith("Salesforce"))
    shards = {n: len(c) for n, c in blip2.files.items() if n.startswith("model-")}
    got = shards["model-00001-of-00004.safetensors"] + shards["model-00002-of-00004.safetensors"]
    assert f"fetched 2 of 4 BLIP-2 weight shards: {got:,} of {sum(shards.values()):,} bytes" in result.stdout
    print(f"BLIP-2 tiny repo: fetched {got:,} of {sum(shards.values()):,} weight bytes")
    extracted = load_file(str(base / "models" / "thinkdiff" / "blip2_vision.safetensors"))
    assert set(extracted) == set(tiny.vision)
    for key, tensor in tiny.vision.items():
        assert torch.equal(extracted[key], tensor.half()), key
    assert not list((base / ".thinkdiff_cache").rglob("model-0000*.safetensors"))  # the shards served only the extraction


def test_a_download_killed_midway_resumes_where_it_stopped(hub, tiny, tmp_path):
    base = comfyui(tmp_path)
    shard = "model-00001-of-00002.safetensors"
    hub.slow[shard] = 0.002  # 4 kB every 2 ms
    process = subprocess.Popen(**command(hub, base, "--model", "Qwen2-VL-7B-Instruct"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    partial = None
    deadline = time.time() + 120
    while time.time() < deadline and partial is None:
        found = [p for p in (base / ".thinkdiff_cache").rglob(f"{shard}.partial") if p.stat().st_size > 256 * 1024]
        partial = found[0] if found else None
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert partial is not None, "the download never started"
    kept = partial.stat().st_size
    size = len(next(r for r in tiny.repos if r.repo_id == QWEN).files[shard])
    assert 0 < kept < size and not (base / "models" / "LLM" / "Qwen2-VL-7B-Instruct").exists()  # nothing half-written
    hub.slow.clear()
    hub.log.clear()
    result = setup(hub, base, "--model", "Qwen2-VL-7B-Instruct")
    assert result.returncode == 0, result.stdout + result.stderr
    (again,) = hub.requested(shard)
    assert again.range == f"bytes={kept}-" and again.sent == size - kept
    qwen = next(r for r in tiny.repos if r.repo_id == QWEN)
    assert (base / "models" / "LLM" / "Qwen2-VL-7B-Instruct" / shard).read_bytes() == qwen.files[shard]


def test_a_damaged_file_is_named_and_replaced_only_with_repair(hub, tiny, tmp_path):
    base = comfyui(tmp_path)
    assert setup(hub, base, "--model", "clip_l.safetensors").returncode == 0
    target = base / "models" / "text_encoders" / "clip_l.safetensors"
    original = target.read_bytes()
    target.write_bytes(original[: len(original) // 2])  # an interrupted copy
    result = setup(hub, base, "--model", "clip_l.safetensors")
    assert result.returncode == 1 and f"{target} is truncated" in result.stdout and "--repair" in result.stdout
    assert target.read_bytes() == original[: len(original) // 2]
    repaired = setup(hub, base, "--model", "clip_l.safetensors", "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert target.read_bytes() == original


def test_a_download_that_does_not_match_the_hubs_hash_is_refused(hub, tmp_path):
    base = comfyui(tmp_path)
    hub.tamper.add("clip_l.safetensors")  # same size, one byte off
    result = setup(hub, base, "--model", "clip_l.safetensors")
    assert result.returncode == 1 and "does not match the hub's sha256" in result.stdout, result.stdout
    assert files_under(base / "models") == set() and not list((base / ".thinkdiff_cache").rglob("clip_l*"))


def test_a_gated_repo_gives_one_licence_message_and_the_rest_still_downloads(hub, tmp_path):
    base = comfyui(tmp_path)
    result = setup(hub, base, "--variant", "lvlm", token=None)
    assert result.returncode == 1
    message = [line for line in result.stdout.splitlines() if "is gated" in line]
    assert len(message) == 1, result.stdout
    for words in ("https://huggingface.co/black-forest-labs/FLUX.1-dev", "accept its licence", "huggingface-cli login",
                  "HF_TOKEN", "flux1-dev.safetensors", "ae.safetensors"):
        assert words in message[0]
    assert files_under(base / "models") >= {"thinkdiff/thinkdiff_lvlm.safetensors", "text_encoders/clip_l.safetensors",
                                           "text_encoders/t5xxl_fp16.safetensors", "LLM/Qwen2-VL-7B-Instruct/config.json"}
    assert not (base / "models" / "diffusion_models").exists() and not (base / "models" / "vae").exists()


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "no network"])
def test_offline_lists_what_is_missing_and_where_it_goes(hub, tmp_path, how):
    base = comfyui(tmp_path)
    env = {"HF_HUB_OFFLINE": "1"} if how == "HF_HUB_OFFLINE" else {}
    if how == "no network":
        hub.__exit__()  # nothing listens on the endpoint any more
    result = setup(hub, base, "--variant", "clip", **env)
    assert result.returncode == 1 and "cannot reach the Hugging Face hub" in result.stderr, result.stderr
    assert ("HF_HUB_OFFLINE" if env else "cannot be reached") in result.stderr
    for where, source in [("models/thinkdiff/blip2_vision.safetensors", "https://huggingface.co/Salesforce/blip2-flan-t5-xxl"),
                          ("models/thinkdiff/thinkdiff_clip.safetensors", "https://huggingface.co/Mifucius/ThinkDiff"),
                          ("models/diffusion_models/flux1-dev.safetensors", "FLUX.1-dev/resolve/main/flux1-dev.safetensors")]:
        assert any(where in line and source in line for line in result.stderr.splitlines()), (where, result.stderr)
    assert files_under(base / "models") == set()
    if how == "no network":
        hub.__enter__()  # for the fixture's exit


def test_not_enough_disk_space_is_refused_before_any_byte_moves(hub, tmp_path):
    base = comfyui(tmp_path)
    result = setup(hub, base, "--variant", "lvlm", python=("-c", FAKE_FREE_DISK))
    assert result.returncode == 1 and "not enough disk space" in result.stderr, result.stderr
    needed = re.search(r"this needs (\d+\.\d\d) GB \(downloads (\d+\.\d\d) GB", result.stderr)
    assert needed and float(needed[1]) >= float(needed[2]) > 0, result.stderr  # the tiny files: about 0.1 GB
    assert "0.00 GB are free" in result.stderr and "Nothing was downloaded" in result.stderr
    assert resolved(hub) == [] and files_under(base / "models") == set()


def test_a_present_file_is_left_untouched(hub, tmp_path):
    base = comfyui(tmp_path)
    mine = base / "models" / "text_encoders" / "clip_l.safetensors"
    mine.parent.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"my.own.weight": torch.ones(3)}, str(mine))
    before = (mine.read_bytes(), mine.stat().st_mtime_ns)
    result = setup(hub, base, "--model", "clip_l.safetensors", "--model", "t5xxl_fp16.safetensors")
    assert result.returncode == 0, result.stdout
    assert (mine.read_bytes(), mine.stat().st_mtime_ns) == before
    assert [Path(p).name for p in resolved(hub)] == ["t5xxl_fp16.safetensors"]


@pytest.mark.comfyui
def test_setup_then_the_shipped_workflow_runs_in_a_real_server(hub, tiny, tmp_path):
    """Fresh models/ -> setup -> the doctor says ready -> the in-context template runs with the fetched ThinkDiff files
    (its ThinkDiff loaders as shipped; only the core Flux loaders swapped for the tiny-model test loaders)."""
    base = prepare_base(tmp_path / "ComfyUI")
    result = setup(hub, base, "--workflow", "thinkdiff_lvlm_in_context")
    assert result.returncode == 0, result.stdout + result.stderr
    assert doctor(base, "thinkdiff_lvlm_in_context").returncode == 0
    for name, content in tiny.taef1.items():  # the tiny Flux decodes with TAEF1 (VAELoader "taef1"), not a setup file
        (base / "models" / "vae_approx").mkdir(exist_ok=True)
        (base / "models" / "vae_approx" / name).write_bytes(content)
    for image in (WORKFLOWS / "images").glob("*.png"):
        (base / "input" / image.name).write_bytes(image.read_bytes())
    with ComfyServer(base) as server:
        ui = json.loads((WORKFLOWS / "thinkdiff_lvlm_in_context.json").read_text())
        graph = ui_to_api(ui, server.object_info())
        core = {k: n for k, n in graph.items() if not n["class_type"].startswith("ThinkDiff")}
        swapped = {**graph, **swap_to_tiny(core)}
        for node in swapped.values():
            if node["class_type"] == "TinyUNETLoader":
                node["inputs"]["unet_name"] = "flux1-dev.safetensors"
            if node["class_type"] == "TinyFluxDualCLIPLoader":
                node["inputs"].update(clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors")
        assert {n["inputs"].get("model") for n in swapped.values() if n["class_type"] == "ThinkDiffVLMLoader"} == {"Qwen2-VL-7B-Instruct"}
        run = server.run(swapped)
        assert run.ok, run.error
        (image,) = run.images()
        assert image.stat().st_size > 0
