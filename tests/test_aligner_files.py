"""Our aligner format, release checkpoints as the original writes them, the converter CLI and every bad file."""

import argparse
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.support.tiny_models import random_aligner
from tests.support.torch_files import Gadget, mapped_files, save_as_on_first_gpu
from thinkdiff.__main__ import main as cli
from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import (
    AlignerWeights,
    convert_release_checkpoint,
    load_aligner_weights,
    save_aligner_weights,
)
from thinkdiff.errors import ThinkDiffError

OUR_KEYS = ["in_proj.bias", "in_proj.weight", "norm.weight", "out_proj.bias", "out_proj.weight"]


def release_state(aligner: Aligner, prefix: str = "") -> dict[str, torch.Tensor]:
    """The original's nn.Sequential names, written out here (thinkdiff-reference.md 2.4), not taken from our key table."""
    ours = aligner.state_dict()
    layout = {"mm_projector.0.weight": "in_proj.weight", "mm_projector.0.bias": "in_proj.bias",
              "mm_projector.2.weight": "out_proj.weight", "mm_projector.2.bias": "out_proj.bias",
              "mm_projector.3.weight": "norm.weight"}
    return {prefix + release: ours[mine].clone() for release, mine in layout.items()}


def original_checkpoint(aligner: Aligner, variant: str, vocab: int = 96) -> dict:
    """What RunnerClipT5._save_checkpoint writes: {"model", "optimizer", "config", "scaler", "epoch"}. "model" keeps the
    frozen T5 embedding because the filter compares named_parameters() (tied weights listed once) with state_dict();
    CLIP files hold it under the encoder's name too (tied: one storage). The optimizer is a real AdamW after one step."""
    embedding = torch.randn(vocab, aligner.out_dim).to(torch.bfloat16)
    model = {**release_state(aligner), "language_model.decoder.embed_tokens.weight": embedding}
    if variant == "clip":
        model["language_model.encoder.embed_tokens.weight"] = embedding
    trained = random_aligner(aligner.in_dim, aligner.in_proj.out_features, aligner.out_dim, seed=9)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-4, weight_decay=0.05)
    trained(torch.randn(2, aligner.in_dim)).sum().backward()
    optimizer.step()
    config = {"model": {"arch": "blip-vision-t5-decoder" if variant == "clip" else "mllama-vllm-t5-embed-decoder-2",
                        "mm_projector_type": "mlp2x_gelu_t5_norm", "layer_norm_reinit_weight_with_language_encoder": True},
              "run": {"lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-4, "min_lr": 8e-5, "warmup_steps": 2000,
                      "batch_size_train": 42 if variant == "clip" else 32, "iters_per_epoch": 5000, "seeds": [42]}}
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 17}
    return {"model": model, "optimizer": optimizer.state_dict(), "config": config, "scaler": scaler, "epoch": 4}


def gadgets(marker: Path) -> dict[str, Gadget]:
    """Each would create ``marker`` if it ran."""
    return {
        "Path.touch": Gadget(Path.touch, marker),
        "os.system": Gadget(os.system, f"touch {marker}"),
        "subprocess.run": Gadget(subprocess.run, ["touch", str(marker)]),
        "builtins.exec": Gadget(exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": Gadget(eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.open": Gadget(open, str(marker), "w"),
        "pickle.loads": Gadget(pickle.loads, pickle.dumps(Gadget(Path.touch, marker))),
    }


@pytest.fixture
def aligner() -> Aligner:
    return random_aligner(in_dim=40, hidden_dim=24, out_dim=16, seed=1)


def assert_same_weights(weights: AlignerWeights, aligner: Aligner) -> None:
    for key, value in aligner.state_dict().items():
        torch.testing.assert_close(weights.state[key], value)


@pytest.mark.parametrize("layout", ["release", "module_prefix", "bare"])
def test_release_checkpoint_loads_with_weights_only(tmp_path, aligner, layout):
    state = release_state(aligner, "module." if layout == "module_prefix" else "")
    checkpoint = {"step": 7, **state} if layout == "bare" else {"model": state, "epoch": 4, "scaler": None}
    torch.save(checkpoint, tmp_path / "thinkdiff_lvlm.pth")
    weights = load_aligner_weights(tmp_path / "thinkdiff_lvlm.pth")
    assert_same_weights(weights, aligner)
    assert (weights.in_dim, weights.hidden_dim, weights.out_dim) == (40, 24, 16)
    assert weights.metadata == {"converted_from": "thinkdiff_lvlm.pth"}


def test_conversion_round_trip(tmp_path, aligner, capsys):
    torch.save({"model": release_state(aligner), "epoch": 4}, tmp_path / "release.pth")
    assert cli(["convert-aligner", str(tmp_path / "release.pth"), str(tmp_path / "ours.safetensors"), "--variant", "lvlm",
                "--source-model", "Qwen2-VL-7B-Instruct"]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'ours.safetensors'}: lvlm aligner 40 -> 24 -> 16\n"
    weights = load_aligner_weights(tmp_path / "ours.safetensors")
    assert weights.metadata["source_model"] == "Qwen2-VL-7B-Instruct"
    assert_same_weights(weights, aligner)
    assert weights.metadata["format"] == "thinkdiff.aligner"
    assert weights.metadata["variant"] == "lvlm"
    assert (weights.metadata["input_dim"], weights.metadata["output_dim"]) == ("40", "16")
    assert weights.metadata["converted_from"] == "release.pth"
    with safe_open(str(tmp_path / "ours.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == OUR_KEYS
    x = torch.randn(3, 40)
    torch.testing.assert_close(Aligner.from_state_dict(weights.state)(x), aligner(x))


@pytest.mark.parametrize("variant", ["lvlm", "clip"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy_format"])
def test_the_original_checkpoint_layout_loads_and_converts_to_exactly_the_aligner(tmp_path, aligner, variant, legacy):
    torch.save(original_checkpoint(aligner, variant), tmp_path / "release.pth", _use_new_zipfile_serialization=not legacy)
    assert_same_weights(load_aligner_weights(tmp_path / "release.pth"), aligner)  # weights_only=True: tensors and plain data
    weights = convert_release_checkpoint(tmp_path / "release.pth", tmp_path / "converted.safetensors")
    assert_same_weights(weights, aligner)
    with safe_open(str(tmp_path / "converted.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == OUR_KEYS  # neither the T5 embedding nor optimizer moments
    x = torch.randn(3, aligner.in_dim)
    torch.testing.assert_close(Aligner.from_state_dict(load_aligner_weights(tmp_path / "converted.safetensors").state)(x), aligner(x))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy_format"])
def test_objects_beside_the_tensors_are_refused_and_no_gadget_runs_in_the_converter(tmp_path, aligner, legacy):
    marker = tmp_path / "code-ran"
    checkpoint = {**original_checkpoint(aligner, "lvlm"), "config": gadgets(marker)}
    torch.save(checkpoint, tmp_path / "thinkdiff_lvlm.pth", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ThinkDiffError) as refused:
        load_aligner_weights(tmp_path / "thinkdiff_lvlm.pth")
    assert str(refused.value) == (
        "thinkdiff_lvlm.pth pickles Python objects besides tensors, so it is not loaded (loading it could run code). "
        f"Extract its tensors once, without running anything from it: `python -m thinkdiff convert-aligner "
        f"{tmp_path / 'thinkdiff_lvlm.pth'} {tmp_path / 'thinkdiff_lvlm.safetensors'}`, then pick the .safetensors file.")
    assert not marker.exists()
    weights = convert_release_checkpoint(tmp_path / "thinkdiff_lvlm.pth", tmp_path / "out.safetensors")
    assert not marker.exists(), "the converter executed code from the checkpoint"
    assert_same_weights(weights, aligner)
    assert_same_weights(load_aligner_weights(tmp_path / "out.safetensors"), aligner)


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("name", ["Path.touch", "os.system", "subprocess.run", "builtins.exec", "builtins.eval", "builtins.open",
                                  "pickle.loads"])
def test_a_gadget_as_the_whole_file_runs_nothing(tmp_path, name, protocol):
    """torch.save's default pickle protocol 2 spells builtins and subprocess as ``__builtin__`` and ``commands``; a
    hand-made file uses protocol 3+'s real module names, so both are tried."""
    marker = tmp_path / "code-ran"
    torch.save(gadgets(marker)[name], tmp_path / "evil.pth", pickle_protocol=protocol)
    with pytest.raises(ThinkDiffError):
        convert_release_checkpoint(tmp_path / "evil.pth", tmp_path / "out.safetensors")
    with pytest.raises(ThinkDiffError):
        load_aligner_weights(tmp_path / "evil.pth")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_saved_metadata_is_complete(tmp_path, aligner):
    """Every metadata field, into a folder that does not exist yet; a width no release has is ``unknown``."""
    path = save_aligner_weights(AlignerWeights(aligner.state_dict(), {"note": "mine"}), tmp_path / "a" / "b" / "x.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"variant": "unknown", "source_model": "unknown", "note": "mine", "format": "thinkdiff.aligner",
                                "format_version": "1", "input_dim": "40", "hidden_dim": "24", "output_dim": "16"}
    assert load_aligner_weights(path).describe() == "unknown aligner 40 -> 24 -> 16"


def test_converting_our_own_format_rewrites_it(tmp_path, aligner):
    source = save_aligner_weights(AlignerWeights(aligner.state_dict()), tmp_path / "ours.SafeTensors", note="kept")
    weights = convert_release_checkpoint(source, tmp_path / "again.safetensors", variant="lvlm")
    assert_same_weights(weights, aligner)
    again = load_aligner_weights(tmp_path / "again.safetensors")
    assert_same_weights(again, aligner)
    assert (again.metadata["note"], again.metadata["variant"]) == ("kept", "lvlm")


def test_converting_a_checkpoint_that_is_no_aligner_names_it(tmp_path, aligner):
    state = release_state(aligner)
    del state["mm_projector.0.bias"]
    torch.save({"model": state, "config": argparse.Namespace(lr=1e-4)}, tmp_path / "partial.pth")
    with pytest.raises(ThinkDiffError, match=r"^partial\.pth is not a ThinkDiff aligner: missing in_proj\.bias "):
        convert_release_checkpoint(tmp_path / "partial.pth", tmp_path / "out.safetensors")


def test_release_files_are_memory_mapped_and_gpu_tensors_load_on_the_cpu(tmp_path):
    """A zip release is mapped, not read (its T5 embedding stays on disk); a legacy one is read; tensors saved on a GPU
    come to the CPU."""
    big = random_aligner(in_dim=1024, hidden_dim=256, out_dim=16, seed=2)  # in_proj: 1 MB, its own pages
    torch.save({"model": release_state(big)}, tmp_path / "zip.pth")
    torch.save({"model": release_state(big)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_as_on_first_gpu({"model": release_state(big)}, tmp_path / "gpu.pth")
    for name in ("zip.pth", "legacy.pth", "gpu.pth"):
        weights = load_aligner_weights(tmp_path / name)
        assert_same_weights(weights, big)
        assert weights.state["in_proj.weight"].device == torch.device("cpu")
        if sys.platform.startswith("linux"):
            mapped = str(tmp_path / name) in mapped_files(weights.state["in_proj.weight"])
            assert mapped == (name == "zip.pth"), name


def test_torch_s_opt_out_of_weights_only_does_not_reach_the_loader(tmp_path, aligner, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (set for another tool) turns off weights_only where a caller leaves it unset."""
    marker = tmp_path / "code-ran"
    torch.save({"model": release_state(aligner), "config": gadgets(marker)}, tmp_path / "evil.pth")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ThinkDiffError, match="pickles Python objects"):
        load_aligner_weights(tmp_path / "evil.pth")
    assert not marker.exists()


def test_real_widths_are_recognised(tmp_path):
    weights = AlignerWeights(random_aligner(in_dim=1408, hidden_dim=8, out_dim=8).state_dict())
    path = save_aligner_weights(weights, tmp_path / "clip.safetensors")
    loaded = load_aligner_weights(path)
    assert loaded.variant == "clip" and "blip2" in loaded.metadata["source_model"]


def test_missing_keys(tmp_path, aligner):
    state = release_state(aligner)
    del state["mm_projector.3.weight"]
    torch.save({"model": state}, tmp_path / "partial.pth")
    with pytest.raises(ThinkDiffError, match=r"missing norm\.weight"):
        load_aligner_weights(tmp_path / "partial.pth")


def test_inconsistent_shapes(tmp_path, aligner):
    state = release_state(aligner)
    state["mm_projector.2.weight"] = torch.zeros(16, 7)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ThinkDiffError, match="inconsistent aligner shapes"):
        load_aligner_weights(tmp_path / "bad.pth")


@pytest.mark.parametrize("name", ["broken.safetensors", "broken.pth"])
def test_corrupt_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ThinkDiffError, match="download it again"):
        load_aligner_weights(tmp_path / name)


def test_truncated_safetensors(tmp_path, aligner):
    path = save_aligner_weights(AlignerWeights(aligner.state_dict()), tmp_path / "a.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ThinkDiffError, match=r"; an interrupted download or copy\): download it again\.$"):
        load_aligner_weights(path)


def test_a_damaged_zip_release(tmp_path):
    with zipfile.ZipFile(tmp_path / "cut.pth", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00")  # a zip, but the pickle stops short
    with pytest.raises(ThinkDiffError, match=r"^cut\.pth is not a readable PyTorch checkpoint \(.+\); download it again\.$"):
        load_aligner_weights(tmp_path / "cut.pth")


def test_missing_file(tmp_path):
    with pytest.raises(ThinkDiffError, match="not found"):
        load_aligner_weights(tmp_path / "nope.safetensors")


def test_not_an_aligner(tmp_path):
    """The message names every missing key and the file's first eight keys, sorted."""
    state = {f"block.{i}.weight": torch.zeros(2) for i in (9, 3, 1, 7, 5, 0, 8, 2, 6, 4)}
    torch.save({"model": {**state, "mm_projector.3.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ThinkDiffError) as e:
        load_aligner_weights(tmp_path / "other.pth")
    assert str(e.value) == (
        "other.pth is not a ThinkDiff aligner: missing in_proj.weight, in_proj.bias, out_proj.weight, out_proj.bias "
        "(found: block.0.weight, block.1.weight, block.2.weight, block.3.weight, block.4.weight, block.5.weight, "
        "block.6.weight, block.7.weight). "
        "Expected the keys of the ThinkDiff release (mm_projector.0/2/3.*) or of this pack's format.")


def test_a_safetensors_file_of_another_model_is_named(tmp_path):
    """A T5 or Flux file picked in the aligner list: the message names that file, not the list."""
    save_file({"encoder.block.0.weight": torch.zeros(2)}, str(tmp_path / "t5xxl_fp16.safetensors"))
    with pytest.raises(ThinkDiffError, match=r"^t5xxl_fp16\.safetensors is not a ThinkDiff aligner: missing in_proj\.weight"):
        load_aligner_weights(tmp_path / "t5xxl_fp16.safetensors")


def test_an_empty_state_dict_is_named(tmp_path):
    torch.save({"model": {}}, tmp_path / "empty.pth")
    with pytest.raises(ThinkDiffError, match=r"\(found: no tensors\)"):
        load_aligner_weights(tmp_path / "empty.pth")


def test_a_file_without_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(ThinkDiffError) as e:
        load_aligner_weights(tmp_path / "list.pth")
    assert str(e.value) == "list.pth holds a list, not a state dict."


def test_cli_reports_errors(tmp_path, capsys):
    assert cli(["inspect-aligner", str(tmp_path / "missing.safetensors")]) == 1
    assert "not found" in capsys.readouterr().err


def test_cli_inspect(tmp_path, aligner, capsys):
    path = save_aligner_weights(AlignerWeights(aligner.state_dict()), tmp_path / "a.safetensors", source_model="x")
    assert cli(["inspect-aligner", str(path)]) == 0
    out = capsys.readouterr().out
    assert "40 -> 24 -> 16" in out and "source_model: x" in out


def test_pickle_module_is_not_used_for_safe_files(tmp_path, aligner, monkeypatch):
    """Release files that hold only tensors load through torch's weights_only unpickler, never plain pickle."""
    torch.save({"model": release_state(aligner)}, tmp_path / "ok.pth")
    monkeypatch.setattr(pickle, "Unpickler", None)
    assert_same_weights(load_aligner_weights(tmp_path / "ok.pth"), aligner)
