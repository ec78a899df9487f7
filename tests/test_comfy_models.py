"""``nodes.comfy_models`` without a server: the model folders it registers with ComfyUI's real ``folder_paths`` (in
temporary folders, its global tables restored after each test), the files and folders the loaders' combos list, the
errors for a missing model, and what it hands ComfyUI's memory manager (device, dtype, sizes, load arguments; ComfyUI's
decisions stood in for by monkeypatching ``comfy.model_management``)."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.support.comfy_pack import pack
from tests.support.tiny_models import make_aligner, make_vision
from thinkdiff.model_setup import missing_message

pytestmark = pytest.mark.comfyui
CPU, GPU = torch.device("cpu"), torch.device("cuda", 3)  # no CUDA is needed to name a device
ThinkDiffError = pack().errors.ThinkDiffError  # the pack's own class (mounted as thinkdiff_pack)
ALIGNER_EXTENSIONS = {".safetensors", ".sft", ".pth", ".pt"}


def models() -> types.ModuleType:
    return pack().comfy_models


@pytest.fixture
def folder_paths(monkeypatch, tmp_path):
    """ComfyUI's ``folder_paths`` with an empty table of model folders and ``models_dir`` in ``tmp_path/models``; the
    real table, cache and models folder come back after the test."""
    module = models().folder_paths
    monkeypatch.setattr(module, "folder_names_and_paths", {})
    monkeypatch.setattr(module, "filename_list_cache", {})
    monkeypatch.setattr(module, "models_dir", str(tmp_path / "models"))
    cache_helper = getattr(module, "cache_helper", None)  # ComfyUI 0.33's strong cache, on only while /object_info runs
    if cache_helper is not None:
        monkeypatch.setattr(cache_helper, "cache", {})
        monkeypatch.setattr(cache_helper, "active", False)
    return module


def touch(path: Path, data: bytes = b"{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---- register_model_folders


def test_the_folders_are_registered_under_models_with_their_extensions(folder_paths, tmp_path):
    models().register_model_folders()
    assert folder_paths.folder_names_and_paths == {
        "thinkdiff": ([str(tmp_path / "models" / "thinkdiff")], ALIGNER_EXTENSIONS),
        "LLM": ([str(tmp_path / "models" / "LLM")], set()),
    }
    # a set of its own: ComfyUI or another pack adding an extension must not change the pack's constant
    assert folder_paths.folder_names_and_paths["thinkdiff"][1] is not models().ALIGNER_EXTENSIONS


def test_folders_set_up_by_extra_model_paths_keep_theirs_and_get_the_default_too(folder_paths, tmp_path):
    thinkdiff_paths, llm_paths = ["/mnt/models/thinkdiff"], ["/mnt/models/LLM"]
    folder_paths.folder_names_and_paths.update(thinkdiff=(thinkdiff_paths, {".gguf"}), LLM=(llm_paths, {".bin"}))
    models().register_model_folders()
    thinkdiff, llm = folder_paths.folder_names_and_paths["thinkdiff"], folder_paths.folder_names_and_paths["LLM"]
    assert thinkdiff == (["/mnt/models/thinkdiff", str(tmp_path / "models" / "thinkdiff")], {".gguf", *ALIGNER_EXTENSIONS})
    assert llm == (["/mnt/models/LLM", str(tmp_path / "models" / "LLM")], {".bin"})
    assert thinkdiff[0] is thinkdiff_paths and llm[0] is llm_paths  # the same lists ComfyUI holds, extended
    models().register_model_folders()  # the default is listed once, however often the pack is loaded
    assert folder_paths.folder_names_and_paths["thinkdiff"][0] == thinkdiff_paths == [
        "/mnt/models/thinkdiff", str(tmp_path / "models" / "thinkdiff")]


# ---- the VLM folders


@pytest.fixture
def llm_roots(folder_paths, tmp_path):
    """Two models/LLM roots (and a missing one and a file listed before them) with folders marked every way, too deep,
    at the root and unmarked."""
    first, second = tmp_path / "LLM1", tmp_path / "LLM2"
    for name in ("a/config.json", "org/b/model-00001-of-00002.safetensors", "org/c/d/config.json", "config.json",
                 "e/tokenizer.json", "f/model.safetensors.index.json", "g/tokenizer_config.json", "h/README.md",
                 "i/model.safetensors"):
        touch(first / name)
    touch(second / "z" / "config.json")
    touch(second / "a" / "tokenizer.json")  # the same name under two roots is listed once
    touch(second / "model_in_a_file")
    not_a_folder = touch(tmp_path / "LLM.txt")
    roots = [str(tmp_path / "missing"), str(not_a_folder), str(first), str(second)]
    folder_paths.folder_names_and_paths["LLM"] = (roots, set())
    return roots


def test_vlm_folders_are_the_marked_folders_one_or_two_levels_deep_in_every_root(llm_roots):
    assert models().vlm_folders() == ["a", "e", "f", "g", "i", "org/b", "z"]


def test_a_vlm_folder_is_found_in_the_first_root_that_has_it(llm_roots, tmp_path):
    assert models().vlm_folder_path("z") == tmp_path / "LLM2" / "z"
    assert models().vlm_folder_path("a") == tmp_path / "LLM1" / "a"
    assert models().vlm_folder_path("org/b") == tmp_path / "LLM1" / "org" / "b"
    assert models().vlm_folder_path("h") == tmp_path / "LLM1" / "h"  # the loader says what an incomplete folder lacks


def test_a_missing_vlm_folder_names_where_it_was_looked_for(llm_roots, tmp_path):
    for name in ("nope", "model_in_a_file"):  # a file is not a model folder
        with pytest.raises(ThinkDiffError) as missing:
            models().vlm_folder_path(name)
        assert str(missing.value).startswith(f"{name!r} not found in {', '.join(llm_roots)}. Qwen2-VL-7B-Instruct, ")
        assert str(missing.value) == missing_message(name, "LLM", llm_roots)  # the setup guidance of models/LLM's files


# ---- the files in models/thinkdiff


@pytest.fixture(scope="module")
def made_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("made")
    return {"vision": make_vision(folder / "vision.safetensors"), "aligner": make_aligner(folder / "aligner.safetensors")}


@pytest.fixture
def thinkdiff_roots(folder_paths, tmp_path, made_files):
    """Two models/thinkdiff roots: a vision file (also as .sft), an aligner, a release .pth, a damaged file, a
    safetensors file without metadata and a file of another type."""
    first, second = tmp_path / "thinkdiff1", tmp_path / "thinkdiff2"
    first.mkdir()
    second.mkdir()
    shutil.copy(made_files["vision"], first / "blip2_vision.safetensors")
    shutil.copy(made_files["vision"], second / "blip2_vision_copy.sft")
    shutil.copy(made_files["aligner"], second / "thinkdiff_lvlm.safetensors")
    touch(second / "release.pth", b"not read")
    touch(second / "damaged.safetensors", b"\x05\x00")
    save_file({"w": torch.zeros(2)}, second / "plain.safetensors")
    touch(second / "notes.txt")
    folder_paths.folder_names_and_paths["thinkdiff"] = ([str(first), str(second)], set(ALIGNER_EXTENSIONS))
    return first, second


def test_a_vision_file_is_told_by_its_metadata(thinkdiff_roots, made_files, tmp_path):
    first, second = thinkdiff_roots
    is_vision = models()._is_vision_file
    assert is_vision(str(first / "blip2_vision.safetensors")) is True
    assert is_vision(str(second / "blip2_vision_copy.sft")) is True
    assert is_vision(str(second / "thinkdiff_lvlm.safetensors")) is False
    assert is_vision(str(second / "plain.safetensors")) is False  # no __metadata__
    assert is_vision(str(second / "release.pth")) is False  # not read: only safetensors files can be vision files
    assert is_vision(str(second / "notes.txt")) is False
    assert is_vision(str(second / "damaged.safetensors")) is None
    assert is_vision(str(tmp_path / "gone.safetensors")) is None  # unreadable (OSError)
    (first / "folder.sft").mkdir()
    assert is_vision(str(first / "folder.sft")) is None  # a folder named like a file: unreadable too


def test_the_vision_and_aligner_lists_share_only_damaged_files(thinkdiff_roots):
    assert models().thinkdiff_files(vision=True) == ["blip2_vision.safetensors", "blip2_vision_copy.sft",
                                                     "damaged.safetensors"]
    assert models().thinkdiff_files(vision=False) == ["damaged.safetensors", "plain.safetensors", "release.pth",
                                                      "thinkdiff_lvlm.safetensors"]


def test_a_thinkdiff_file_is_found_in_the_first_root_that_has_it(thinkdiff_roots):
    first, second = thinkdiff_roots
    assert models().thinkdiff_file_path("blip2_vision.safetensors") == first / "blip2_vision.safetensors"
    assert models().thinkdiff_file_path("release.pth") == second / "release.pth"
    with pytest.raises(ThinkDiffError) as missing:
        models().thinkdiff_file_path("thinkdiff_clip.safetensors")
    assert str(missing.value).startswith(f"'thinkdiff_clip.safetensors' not found in {first}, {second}. ThinkDiff-CLIP "
                                         "aligner (1408 -> 4096 -> 4096)")
    assert str(missing.value) == missing_message("thinkdiff_clip.safetensors", "thinkdiff", [str(first), str(second)])


def combo_options(node: type, name: str) -> list[str]:
    """A combo's options in a fresh schema (``define_schema``, not ComfyUI's class-level caches)."""
    (widget,) = [i for i in node.define_schema().inputs if i.id == name]
    return widget.options


def test_each_loaders_combo_lists_its_own_kind_of_model(thinkdiff_roots, llm_roots):
    modules = pack()
    assert combo_options(modules.clip_nodes.ThinkDiffVisionLoader, "vision_name") == models().thinkdiff_files(vision=True)
    assert "blip2_vision.safetensors" in combo_options(modules.clip_nodes.ThinkDiffVisionLoader, "vision_name")
    assert combo_options(modules.conditioning_nodes.ThinkDiffAlignerLoader, "aligner_name") == [
        "damaged.safetensors", "plain.safetensors", "release.pth", "thinkdiff_lvlm.safetensors"]
    assert combo_options(modules.vlm_nodes.ThinkDiffVLMLoader, "model") == ["a", "e", "f", "g", "i", "org/b", "z"]


# ---- placement: device and dtype


@pytest.fixture
def comfy_devices(monkeypatch):
    """``comfy_devices(bf16, fp16)``: ComfyUI's main device is GPU; its bf16 / fp16 verdicts; the devices asked about."""
    mm = models().mm
    asked: list[tuple[str, torch.device]] = []

    def make(bf16: bool, fp16: bool) -> list:
        monkeypatch.setattr(mm, "get_torch_device", lambda: GPU)
        monkeypatch.setattr(mm, "should_use_bf16", lambda device=None, **_: asked.append(("bf16", device)) or bf16)
        monkeypatch.setattr(mm, "should_use_fp16", lambda device=None, **_: asked.append(("fp16", device)) or fp16)
        return asked

    return make


@pytest.mark.parametrize(("bf16", "fp16", "dtype"), [(True, True, torch.bfloat16), (True, False, torch.bfloat16),
                                                     (False, True, torch.float16), (False, False, torch.float32)])
def test_auto_is_bf16_then_fp16_then_fp32_as_comfyui_judges_the_device(comfy_devices, bf16, fp16, dtype):
    asked = comfy_devices(bf16, fp16)
    assert models().resolve_dtype("auto", GPU) == dtype
    assert asked == ([("bf16", GPU)] if bf16 else [("bf16", GPU), ("fp16", GPU)])


@pytest.mark.parametrize(("choice", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_a_chosen_dtype_is_used_whatever_the_device(comfy_devices, choice, dtype):
    asked = comfy_devices(False, False)
    assert models().resolve_dtype(choice, CPU) == dtype
    assert asked == []


def test_the_device_choice_is_the_cpu_or_comfyuis_main_device(comfy_devices):
    asked = comfy_devices(False, True)
    assert models().load_device("cpu") == CPU
    assert models().load_device("default") == GPU
    assert models().placement("auto", "default") == (GPU, torch.float16)
    assert asked == [("bf16", GPU), ("fp16", GPU)]
    assert models().placement("fp32", "cpu") == (CPU, torch.float32)
    assert models().placement("auto", "cpu") == (CPU, torch.float16)
    assert asked[2:] == [("bf16", CPU), ("fp16", CPU)]


# ---- what ComfyUI's memory manager is given


class TiedPair(nn.Module):
    """Two 3x3 fp32 layers sharing one weight: 36 bytes stored, though ComfyUI's own count (its state dict) says 72."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3, bias=False)
        self.second = nn.Linear(3, 3, bias=False)
        self.second.weight = self.first.weight


def test_a_patcher_on_the_cpu_stays_there_and_counts_stored_bytes(monkeypatch):
    monkeypatch.setattr(models().mm, "text_encoder_offload_device", lambda: torch.device("meta"))
    module = TiedPair()
    patcher = models().patcher_for(module, CPU)
    assert (patcher.model, patcher.load_device, patcher.offload_device) == (module, CPU, CPU)
    assert patcher.model_size() == patcher.size == 36 * 1


def test_a_patcher_for_a_gpu_offloads_where_comfyui_keeps_text_encoders(monkeypatch):
    monkeypatch.setattr(models().mm, "text_encoder_offload_device", lambda: torch.device("meta"))
    patcher = models().patcher_for(TiedPair(), GPU)
    assert (patcher.load_device, patcher.offload_device, patcher.model_size()) == (GPU, torch.device("meta"), 36)


def loaded(device: torch.device, size: int | None) -> types.SimpleNamespace:
    """An entry of ComfyUI's ``current_loaded_models``: a model of ``size`` loaded bytes on ``device`` (None: freed)."""
    return types.SimpleNamespace(device=device, model=None if size is None else types.SimpleNamespace(loaded_size=lambda: size))


def test_obtainable_memory_is_the_free_bytes_and_what_comfyui_can_evict_on_that_device(monkeypatch):
    mm = models().mm
    free = {GPU: 1000, CPU: 5}
    monkeypatch.setattr(mm, "get_free_memory", lambda device=None, torch_free_too=False: free[device])
    monkeypatch.setattr(mm, "current_loaded_models", [loaded(GPU, 300), loaded(CPU, 70), loaded(GPU, None), loaded(GPU, 20),
                                                      loaded(torch.device("cuda", 0), 4000)])
    assert models().obtainable_memory(GPU) == 1000 + 300 + 20
    assert models().obtainable_memory(CPU) == 5 + 70


def test_load_for_use_asks_comfyui_for_a_full_load_unless_streamable(monkeypatch):
    calls = []
    monkeypatch.setattr(models().mm, "load_models_gpu", lambda *args, **kwargs: calls.append((args, kwargs)))
    patcher = types.SimpleNamespace(model=object())
    assert models().load_for_use(patcher) is patcher.model
    assert models().load_for_use(patcher, streamable=True, memory_required=123) is patcher.model
    assert models().load_for_use(patcher, memory_required=7) is patcher.model
    assert calls == [(([patcher],), {"memory_required": 0, "force_full_load": True}),
                     (([patcher],), {"memory_required": 123, "force_full_load": False}),
                     (([patcher],), {"memory_required": 7, "force_full_load": True})]


def vlm_patcher(device: torch.device, size: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(load_device=device, model_size=lambda: size)


def test_a_bitsandbytes_vlm_that_just_fits_is_loaded_and_one_on_the_cpu_is_not_checked(monkeypatch):
    """8 GB free: 7.5 GB of weights and 0.5 GB to think fit exactly, 7.6 GB do not (the message in full); the CPU's RAM is
    not checked (tests/test_vram_fit.py: the cards of the README)."""
    gb = 10**9
    monkeypatch.setattr(models().mm, "get_free_memory", lambda device=None, torch_free_too=False: 8 * gb)
    monkeypatch.setattr(models().mm, "current_loaded_models", [])
    models().check_fits(vlm_patcher(GPU, 7_500_000_000), "bnb_nf4", gb // 2)
    models().check_fits(vlm_patcher(CPU, 100 * gb), "bnb_8bit", gb)
    with pytest.raises(ThinkDiffError) as refused:
        models().check_fits(vlm_patcher(GPU, 7_600_000_000), "bnb_8bit", gb // 2)
    assert str(refused.value) == (
        "the VLM in bnb_8bit needs 7.6 GB of weights and about 0.5 GB to think, but cuda:3 has 8.0 GB free (counting models "
        "ComfyUI can unload). Choose fp8_e4m3fn or default: those stream the layers that do not fit from CPU RAM; or bnb_nf4 "
        "if this was bnb_8bit (Qwen2-VL-7B: about 6.2 GB).")
