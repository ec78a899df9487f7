"""``python -m thinkdiff doctor`` on fake ComfyUI trees with tiny files standing in for the real models."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.support.paths import REPO
from tests.support.tiny_models import make_aligner
from thinkdiff import doctor, vram_advice
from thinkdiff.__main__ import SETUP_NOT_HERE
from thinkdiff.__main__ import main as cli
from thinkdiff.errors import ThinkDiffError
from thinkdiff.model_setup import BY_NAME, CATALOGUE, ModelFile, describe, missing_message
from thinkdiff.qwen2_vl_sizes import QWEN2_VL_7B
from thinkdiff.safetensors_header import read_header
from thinkdiff.think_memory import typical_think_bytes
from thinkdiff.vram_advice import QWEN2_VL_7B_GB, recommend, working_gb

WORKFLOWS = doctor.shipped_workflows(REPO)
SOURCE, OUT = 64, 32  # tiny widths: VLM / vision hidden size, aligner output = diffusion context = T5 width
CONTEXT = {"diffusion_models": "txt_in.weight", "checkpoints": "context_embedder.weight"}  # a Flux, an SD3 (in a checkpoint)


def fake_file(req: doctor.Requirement, models: Path, source: int = SOURCE, context: int = OUT) -> Path:
    """A tiny stand-in with the widths the doctor reads (header keys as in the real files); the aligner is always
    SOURCE -> OUT, ``source`` / ``context`` set the VLM or vision width and the diffusion model's context width."""
    path = models / req.model.folder / req.model.name
    path.parent.mkdir(parents=True, exist_ok=True)
    if req.model.is_folder:
        path.mkdir(exist_ok=True)
        (path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "text_config": {"hidden_size": source}}))
    elif req.node_type == "ThinkDiffAlignerLoader":
        make_aligner(path, in_dim=SOURCE, hidden_dim=16, out_dim=OUT)
    elif req.node_type == "ThinkDiffVisionLoader":
        save_file({"embeddings.patch_embedding.weight": torch.zeros(source, 3, 2, 2)}, str(path),
                  metadata={"format": "thinkdiff.vision", "hidden_size": str(source)})
    elif req.model.folder in CONTEXT:
        save_file({f"model.diffusion_model.{CONTEXT[req.model.folder]}": torch.zeros(8, context)}, str(path))
    elif "t5" in req.model.name:
        save_file({"encoder.final_layer_norm.weight": torch.ones(OUT)}, str(path))
    else:
        save_file({"weight": torch.zeros(2)}, str(path))
    return path


def complete_tree(root: Path, workflow: Path, **widths: int) -> Path:
    for req in doctor.workflow_requirements(json.loads(workflow.read_text())):
        fake_file(req, root / "models", **widths)
    return root


def report(root: Path, workflow: Path) -> doctor.WorkflowReport:
    (root / "models").mkdir(parents=True, exist_ok=True)
    (result,) = doctor.diagnose(root, [workflow])
    return result


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_empty_install_lists_every_file_with_destination_and_source(tmp_path, workflow):
    result = report(tmp_path, workflow)
    assert not result.ready and result.missing == result.requirements and result.requirements
    text = result.render()
    for req in result.requirements:
        assert req.model.destination in text and req.model.url in text
    assert "NOT READY" in text


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_complete_install_is_ready_and_widths_fit(tmp_path, workflow):
    result = report(complete_tree(tmp_path, workflow), workflow)
    assert result.ready, result.render()
    labels = " ".join(text for _, text in result.fits)
    assert f"VLM/vision hidden size {SOURCE}" in labels and f"aligner out {OUT}" in labels


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_width_mismatches_are_reported(tmp_path, workflow):
    result = report(complete_tree(tmp_path, workflow, source=48, context=16), workflow)
    mismatches = [text for ok, text in result.fits if not ok]
    assert not result.ready and any("48" in t and "!=" in t for t in mismatches)
    if any(r.model.folder in CONTEXT for r in result.requirements):
        assert any("context 16" in t for t in mismatches)


def test_damaged_file_is_reported_not_raised(tmp_path):
    workflow = WORKFLOWS[0]
    complete_tree(tmp_path, workflow)
    aligner = next(r for r in doctor.workflow_requirements(json.loads(workflow.read_text()))
                   if r.node_type == "ThinkDiffAlignerLoader")
    (tmp_path / "models" / aligner.model.folder / aligner.model.name).write_bytes(b"\xff" * 64)
    result = report(tmp_path, workflow)
    assert not result.ready and any("cannot read" in text for ok, text in result.fits if not ok)
    with pytest.raises(ThinkDiffError, match="not a .safetensors file"):
        read_header(tmp_path / "models" / aligner.model.folder / aligner.model.name)


def test_every_model_of_the_shipped_workflows_is_catalogued_and_documented():
    models_md = (REPO / "docs" / "models.md").read_text()
    for workflow in WORKFLOWS:
        data = json.loads(workflow.read_text())
        loaders = {n["type"] for n in data["nodes"] if n["type"].endswith("Loader")}
        assert loaders <= set(doctor.LOADERS), f"{workflow.name}: teach the doctor about {loaders - set(doctor.LOADERS)}"
        for req in doctor.workflow_requirements(data):
            assert BY_NAME.get(req.model.name) is not None, f"{workflow.name}: {req.model.name} is not in the catalogue"
        assert workflow.stem in models_md
    for entry in CATALOGUE:
        assert f"`{entry.name}`" in models_md and entry.url in models_md, entry.name


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m thinkdiff doctor ARGS``, in this process (so that mutation testing sees the code it runs)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        returncode = cli(["doctor", *args])
    return subprocess.CompletedProcess(["doctor", *args], returncode, stdout.getvalue(), stderr.getvalue())


def test_cli_exit_status_follows_readiness(tmp_path):
    workflow = next(w for w in WORKFLOWS if "lvlm" in w.stem)
    (tmp_path / "models").mkdir()
    missing = run_cli("--comfyui", str(tmp_path), "--workflow", workflow.stem)
    assert missing.returncode == 1 and "[missing]" in missing.stdout and "Nothing was downloaded" in missing.stdout
    complete_tree(tmp_path, workflow)
    ready = run_cli("--comfyui", str(tmp_path), "--workflow", workflow.stem)
    assert ready.returncode == 0 and "1 of 1 workflows ready" in ready.stdout, ready.stdout + ready.stderr
    nowhere = run_cli("--comfyui", str(tmp_path / "nope"))
    assert nowhere.returncode == 1 and "--comfyui" in nowhere.stderr
    command = subprocess.run([sys.executable, "-m", "thinkdiff", "doctor", "--comfyui", str(tmp_path), "--workflow", workflow.stem],
                             cwd=REPO, capture_output=True, text=True)  # the command itself
    assert command.returncode == 0 and command.stdout == ready.stdout


def test_setup_and_doctor_fix_hand_their_arguments_to_hub_setup(tmp_path, monkeypatch):
    from hub_setup import fetch

    seen = []
    monkeypatch.setattr(fetch, "run", lambda args: seen.append(args) or 3)
    assert cli(["setup", "--model", "clip_l.safetensors", "--comfyui", str(tmp_path)]) == 3
    assert cli(["doctor", "--fix", "--comfyui", str(tmp_path), "--workflow", "x"]) == 3
    assert (seen[0].model, seen[0].comfyui, seen[1].fix, seen[1].workflow, seen[1].model, seen[1].variant) == (
        ["clip_l.safetensors"], tmp_path, True, ["x"], [], None)  # doctor --fix: the workflows only


class Without:
    """A module finder that finds none of ``names``, as if their folders were not there."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_setup_without_hub_setup_says_where_to_get_it(monkeypatch, capsys):
    """The Comfy Registry archive leaves hub_setup/ out; a module missing inside it is a different error."""
    for name in ("hub_setup", "hub_setup.fetch"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [Without("hub_setup"), *sys.meta_path])
    assert cli(["setup", "--variant", "lvlm"]) == 1
    assert capsys.readouterr().err == f"error: {SETUP_NOT_HERE}\n"
    sys.meta_path[0] = Without("hub_setup.fetch")
    with pytest.raises(ModuleNotFoundError, match="hub_setup.fetch"):
        cli(["setup", "--variant", "lvlm"])


def test_the_guidance_says_what_where_source_how_and_licence():
    qwen, flux, vae = BY_NAME["Qwen2-VL-7B-Instruct"], BY_NAME["flux1-dev.safetensors"], BY_NAME["cogvideox_vae.safetensors"]
    assert qwen.guidance() == (
        f"{qwen.what}: put it at ComfyUI/models/LLM/Qwen2-VL-7B-Instruct/ ({qwen.size}). Source: {qwen.url}. Fetch it: "
        "`python -m thinkdiff setup --model Qwen2-VL-7B-Instruct` (in ComfyUI/custom_nodes/ComfyUI-ThinkDiff). "
        f"By hand: {qwen.how}. Licence: Apache-2.0.")
    assert flux.guidance() == (
        f"FLUX.1-dev diffusion model: put it at ComfyUI/models/diffusion_models/flux1-dev.safetensors (23.8 GB (bf16)). "
        f"Source: {flux.url}. Fetch it: `python -m thinkdiff setup --model flux1-dev.safetensors` (in "
        f"ComfyUI/custom_nodes/ComfyUI-ThinkDiff). Licence: {flux.licence}.")
    assert vae.guidance() == (f"{vae.what}: put it at ComfyUI/models/vae/cogvideox_vae.safetensors ({vae.size}). Source: "
                              f"{vae.url}. Get it: {vae.how}. Licence: {vae.licence}.")


def test_a_missing_file_message_names_the_folders_searched_and_what_belongs_there():
    message = missing_message("ae.safetensors", "vae", ["/a/models/vae", "/b/vae"])
    assert message == (f"'ae.safetensors' not found in /a/models/vae, /b/vae. {BY_NAME['ae.safetensors'].guidance()} "
                       "Run `python -m thinkdiff doctor` to check every workflow's files.")
    vaes = [entry.guidance() for entry in CATALOGUE if entry.folder == "vae"]
    assert len(vaes) > 1  # a known name looked for in another folder, or an unknown one: every file of that folder
    elsewhere = missing_message("ae.safetensors", "diffusion_models", [])
    assert elsewhere.startswith("'ae.safetensors' not found in ComfyUI/models/diffusion_models. ")
    assert BY_NAME["flux1-dev.safetensors"].guidance() in elsewhere and BY_NAME["ae.safetensors"].guidance() not in elsewhere
    assert missing_message("my.safetensors", "vae", []) == (f"'my.safetensors' not found in ComfyUI/models/vae. {' '.join(vaes)} "
                                                          "Run `python -m thinkdiff doctor` to check every workflow's files.")


def write_workflow(path: Path, *loaders: tuple[str, list[str]]) -> Path:
    path.write_text(json.dumps({"nodes": [{"id": n, "type": kind, "widgets_values": values}
                                          for n, (kind, values) in enumerate(loaders, 1)], "links": []}))
    return path


def test_the_whole_report_of_a_ready_and_an_unready_workflow(tmp_path):
    models = tmp_path / "models"
    (models / "LLM" / "Qwen2-VL-7B-Instruct").mkdir(parents=True)  # transformers 4.x's layout: the width at the top
    (models / "LLM" / "Qwen2-VL-7B-Instruct" / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "hidden_size": 64}))
    make_aligner(models / "thinkdiff" / "thinkdiff_lvlm.safetensors", in_dim=64, hidden_dim=16, out_dim=32)
    (models / "unet").mkdir(parents=True)  # ComfyUI's older folder name
    save_file({"model.diffusion_model.txt_in.weight": torch.zeros(8, 48)}, str(models / "unet" / "flux1-dev.safetensors"))
    think = write_workflow(tmp_path / "think.json", ("ThinkDiffVLMLoader", ["Qwen2-VL-7B-Instruct", "bf16"]),
                           ("ThinkDiffAlignerLoader", ["thinkdiff_lvlm.safetensors"]))
    flux = write_workflow(tmp_path / "flux.json", ("ThinkDiffAlignerLoader", ["thinkdiff_lvlm.safetensors"]),
                          ("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux"]),
                          ("UNETLoader", ["flux1-dev.safetensors", "default"]))
    result = run_cli("--comfyui", str(tmp_path), "--workflow", str(think), "--workflow", str(flux))
    clip_l, t5 = BY_NAME["clip_l.safetensors"], BY_NAME["t5xxl_fp16.safetensors"]
    fix = "use the aligner trained for these models"
    assert result.returncode == 1 and result.stdout == f"""ComfyUI models folder: {models} (extra_model_paths.yaml is not read)

think: ready
  [ok]       LLM/Qwen2-VL-7B-Instruct/
  [ok]       thinkdiff/thinkdiff_lvlm.safetensors
  [fits]       VLM/vision hidden size 64 (Qwen2-VL-7B-Instruct) = aligner in 64 (thinkdiff_lvlm.safetensors)

flux: NOT READY
  [ok]       thinkdiff/thinkdiff_lvlm.safetensors
  [missing]  text_encoders/clip_l.safetensors  (for DualCLIPLoader)
             {clip_l.guidance()}
  [missing]  text_encoders/t5xxl_fp16.safetensors  (for DualCLIPLoader)
             {t5.guidance()}
  [ok]       diffusion_models/flux1-dev.safetensors
  [MISMATCH]   aligner out 32 (thinkdiff_lvlm.safetensors) != Flux / Chroma context 48 (flux1-dev.safetensors): {fix}

1 of 2 workflows ready. Nothing was downloaded. Fetch what is missing with the same command and --fix.

{vram_advice.advice()}
"""
    ready = run_cli("--comfyui", str(tmp_path), "--workflow", str(think))
    assert ready.returncode == 0
    assert ready.stdout.endswith(f"\n\n1 of 1 workflows ready. Nothing was downloaded.\n\n{vram_advice.advice()}\n")


def test_requirements_come_from_loader_widgets_and_download_links_once_each():
    link = {"name": "4x_upscale.safetensors", "url": "https://example.org/4x.safetensors", "directory": "upscale_models"}
    workflow = {"nodes": [
        {"type": "DualCLIPLoader", "widgets_values": ["clip_l.safetensors"]},  # a workflow saved with fewer widgets
        {"type": "UpscaleModelLoader", "widgets_values": ["4x_upscale.safetensors"], "properties": {"models": [link]}},
        {"type": "CLIPLoader", "widgets_values": ["clip_l.safetensors", "flux"],
         "properties": {"models": [{**link, "name": "clip_l.safetensors", "directory": "text_encoders"}]}},
        {"type": "ThinkDiffVLMLoader", "widgets_values": ["Qwen2-VL-2B-Instruct"]},  # not catalogued: still a folder
        {"type": "VAELoader", "widgets_values": ["my_vae.safetensors"]},  # no link
        {"properties": {"models": [{**link, "name": "x.safetensors"}]}}]}  # a node without a type
    requirements = doctor.workflow_requirements(workflow)
    assert [(r.model.folder, r.model.name, r.node_type) for r in requirements] == [
        ("text_encoders", "clip_l.safetensors", "DualCLIPLoader"), ("upscale_models", "4x_upscale.safetensors", "UpscaleModelLoader"),
        ("LLM", "Qwen2-VL-2B-Instruct", "ThinkDiffVLMLoader"), ("vae", "my_vae.safetensors", "VAELoader"),
        ("upscale_models", "x.safetensors", "")]
    assert requirements[2].model.is_folder and requirements[3].model.url == "(no download link in the workflow)"
    assert requirements[1].model == ModelFile("4x_upscale.safetensors", "upscale_models", "4x_upscale.safetensors", "unknown size",
                                              link["url"], "see the download page")
    assert requirements[1].model.destination == "ComfyUI/models/upscale_models/4x_upscale.safetensors"


def test_a_catalogued_name_in_another_folder_is_described_from_the_workflow_alone():
    assert describe("ae.safetensors", "vae") is BY_NAME["ae.safetensors"]
    assert describe("ae.safetensors", "checkpoints") == ModelFile("ae.safetensors", "checkpoints", "ae.safetensors", "unknown size",
                                                                 "(no download link in the workflow)", "see the download page")
    assert doctor.workflow_requirements({"links": []}) == []  # an API-format graph has no "nodes"


def test_widths_from_sft_files_t5s_width_and_only_the_vision_files_metadata(tmp_path):
    models = tmp_path / "models"
    make_aligner(models / "thinkdiff" / "thinkdiff_lvlm.safetensors", in_dim=64, hidden_dim=16, out_dim=32)
    (models / "text_encoders").mkdir(parents=True)
    save_file({"encoder.final_layer_norm.weight": torch.ones(40)}, str(models / "text_encoders" / "t5xxl_fp16.safetensors"),
              metadata={"hidden_size": "64"})  # a converter's note, not a source width
    (models / "diffusion_models").mkdir(parents=True)
    save_file({"txt_in.weight": torch.zeros(8, 32)}, str(models / "diffusion_models" / "flux1-dev.sft"))
    (models / "LLM" / "Qwen2-VL-7B-Instruct").mkdir(parents=True)
    (models / "LLM" / "Qwen2-VL-7B-Instruct" / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))  # no width
    workflow = write_workflow(tmp_path / "w.json", ("ThinkDiffVLMLoader", ["Qwen2-VL-7B-Instruct"]),
                              ("CLIPLoader", ["t5xxl_fp16.safetensors"]), ("UNETLoader", ["flux1-dev.sft"]),
                              ("ThinkDiffAlignerLoader", ["thinkdiff_lvlm.safetensors"]))
    (result,) = doctor.diagnose(tmp_path, [workflow])
    assert result.fits == [
        (True, "aligner out 32 (thinkdiff_lvlm.safetensors) = Flux / Chroma context 32 (flux1-dev.sft)"),
        (False, "aligner out 32 (thinkdiff_lvlm.safetensors) != T5 40 (t5xxl_fp16.safetensors): use the aligner trained for "
                "these models")]


def test_an_unreadable_file_is_named_and_the_other_checks_still_run(tmp_path):
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    (models / "diffusion_models" / "flux1-dev.safetensors").write_bytes(b"\xff" * 64)
    (models / "LLM" / "Qwen2-VL-7B-Instruct").mkdir(parents=True)
    (models / "LLM" / "Qwen2-VL-7B-Instruct" / "config.json").write_text(json.dumps({"text_config": {"hidden_size": 64}}))
    make_aligner(models / "thinkdiff" / "thinkdiff_lvlm.safetensors", in_dim=64, hidden_dim=16, out_dim=32)
    workflow = write_workflow(tmp_path / "w.json", ("UNETLoader", ["flux1-dev.safetensors"]),
                              ("ThinkDiffVLMLoader", ["Qwen2-VL-7B-Instruct"]), ("ThinkDiffAlignerLoader", ["thinkdiff_lvlm.safetensors"]))
    (result,) = doctor.diagnose(tmp_path, [workflow])
    assert [ok for ok, _ in result.fits] == [False, True] and result.fits[0][1].startswith("cannot read flux1-dev.safetensors: ")
    assert "64 (Qwen2-VL-7B-Instruct) = aligner in 64" in result.fits[1][1]


def test_without_a_workflow_named_every_shipped_one_is_checked(tmp_path):
    (tmp_path / "models").mkdir()
    result = run_cli("--comfyui", str(tmp_path))
    assert f"0 of {len(WORKFLOWS)} workflows ready." in result.stdout
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.endswith(": NOT READY")] == [w.stem for w in WORKFLOWS]


def test_an_unknown_workflow_or_comfyui_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    nope = run_cli("--comfyui", str(tmp_path), "--workflow", "nope")
    assert nope.returncode == 1 and nope.stderr == f"error: no workflow 'nope'; shipped: {', '.join(w.stem for w in WORKFLOWS)}\n"
    assert run_cli("--comfyui", str(tmp_path), "--workflow", WORKFLOWS[0].name).returncode == 1  # a shipped file's name works
    elsewhere = run_cli("--comfyui", str(tmp_path / "none"))
    assert elsewhere.stderr == (f"error: no ComfyUI models folder at {tmp_path / 'none'}/models: pass --comfyui PATH "
                                "(the folder holding models/)\n")
    monkeypatch.setattr(doctor, "default_comfyui", lambda: None)
    assert run_cli().stderr == "error: this pack is not inside ComfyUI/custom_nodes: pass --comfyui PATH\n"


def test_comfyuis_folder_is_two_above_a_pack_in_custom_nodes():
    assert doctor.default_comfyui(Path("/x/ComfyUI/custom_nodes/ComfyUI-ThinkDiff")) == Path("/x/ComfyUI")
    assert doctor.default_comfyui(Path("/x/src/ComfyUI-ThinkDiff")) is None


def test_the_doctor_imports_neither_comfyui_nor_torch():
    code = ("import sys; import thinkdiff.doctor, thinkdiff.model_setup; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'nodes', 'torch')); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_loader_errors_share_the_setup_guidance():
    text = missing_message("thinkdiff_lvlm.safetensors", "thinkdiff", ["/x/models/thinkdiff"])
    entry = BY_NAME["thinkdiff_lvlm.safetensors"]
    assert "/x/models/thinkdiff" in text and entry.destination in text and entry.url in text and "doctor" in text
    assert "`python -m thinkdiff setup --model thinkdiff_lvlm.safetensors`" in text  # the one command that fixes it
    unknown = missing_message("my_aligner.safetensors", "thinkdiff", [])
    assert all(e.destination in unknown for e in CATALOGUE if e.folder == "thinkdiff")
    assert BY_NAME["Qwen2-VL-7B-Instruct"].guidance() in missing_message("Qwen2-VL-2B", "LLM", ["/m/LLM"])


@pytest.mark.parametrize(("free_gb", "weights"), [(24, "default"), (16, "fp8_e4m3fn"), (12, "fp8_e4m3fn"), (8, "bnb_nf4"),
                                                  (6, "fp8_e4m3fn")])
def test_the_recommended_vlm_format_fits_the_free_memory(free_gb, weights):
    chosen, why = recommend(free_gb)
    assert chosen == weights
    if free_gb >= 8:
        assert QWEN2_VL_7B_GB[chosen] + working_gb(chosen) <= free_gb and str(QWEN2_VL_7B_GB[chosen]) in why
    else:
        assert "streams" in why


def test_working_memory_is_the_typical_think_to_a_tenth_of_a_gb_with_fp8s_cast_head():
    """fp8 casts its largest weight per forward: lm_head, 152,064 x 3,584 in bf16, 1.09 GB more."""
    plain = typical_think_bytes(QWEN2_VL_7B, casts_weights=False)
    assert working_gb("default") == working_gb("bnb_8bit") == working_gb("bnb_nf4") == round(plain / 10**9, 1)
    assert working_gb("fp8_e4m3fn") == round((plain + 152_064 * 3_584 * 2) / 10**9, 1)


def test_the_recommendation_says_why_and_takes_a_format_that_just_fits():
    exactly = QWEN2_VL_7B_GB["default"] + working_gb("default")
    assert recommend(exactly)[0] == "default"
    assert recommend(11.0)[0] == "bnb_8bit"  # fp8 needs 9.5 + 1.9 GB (its cast head), 8-bit 9.4 + 0.9 GB
    assert recommend(16.0) == ("fp8_e4m3fn", f"9.5 GB of weights + about {working_gb('fp8_e4m3fn')} GB working memory fit in 16.0 GB")
    assert recommend(5.0) == ("fp8_e4m3fn", "nothing fits in 5.0 GB: fp8_e4m3fn streams the layers that do not fit from CPU "
                                            "RAM (slower, but it runs)")


def test_the_advice_names_the_first_gpu_its_free_memory_and_the_format(monkeypatch):
    cards = {0: ("Fake GPU 0", 12 * 10**9, 24 * 10**9), 1: ("Fake GPU 1", 80 * 10**9, 80 * 10**9)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: cards[device][1:])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: cards[device][0])
    assert vram_advice.gpu_memory() == ("Fake GPU 0", 12.0, 24.0)
    assert vram_advice.gigabytes(9.44e9) == "9.4 GB"
    assert vram_advice.advice() == (f"GPU: Fake GPU 0, 12.0 of 24.0 GB free. VLM Loader weights: {recommend(12.0)[0]} "
                                    f"({recommend(12.0)[1]}). Close other GPU programs or press Unload Models for more room.")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert vram_advice.gpu_memory() is None
    assert vram_advice.advice() == ("GPU: none visible to this Python. Qwen2-VL-7B weights: default 16.6 GB, fp8_e4m3fn 9.5 GB, "
                                    "bnb_8bit 9.4 GB, bnb_nf4 6.2 GB.")


def test_the_doctor_reports_the_gpu_or_its_absence(tmp_path):
    workflow = WORKFLOWS[0]
    complete_tree(tmp_path, workflow)
    out = run_cli("--comfyui", str(tmp_path), "--workflow", workflow.stem).stdout
    assert "GPU: none visible to this Python" in out and "fp8_e4m3fn 9.5 GB" in out  # this machine has no GPU


def test_the_readmes_format_table_quotes_the_computed_sizes():
    """The README's table of weight formats gives the sizes the doctor and the loader compute (one source)."""
    rows = re.findall(r"^\| `(\w+)`[^|]*\| ≈? ?([\d.]+) GB \|", (REPO / "README.md").read_text(), re.M)
    assert {weights: float(size) for weights, size in rows} == QWEN2_VL_7B_GB
