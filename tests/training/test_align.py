"""Stage B / CLIP training end to end on tiny models: learning signal, exact resume, export to the nodes' format."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer

from tests.support.paths import QWEN_TOKENIZER
from tests.support.tiny_models import TINY_VISION_TOWER
from thinkdiff.aligner import Aligner
from thinkdiff.aligner_files import load_aligner_weights
from thinkdiff.dtypes import DTYPES
from thinkdiff.errors import ThinkDiffError
from thinkdiff.manifest import write_manifest_if_new
from thinkdiff.vision import VisionTokenEncoder
from training.__main__ import main as cli
from training.checkpoint import list_checkpoints, read_checkpoint
from training.config import Config
from training.export import export_aligner
from training.feature_store import FeatureShards, GeneratedSample, write_shard
from training.models import build_aligner, frozen_t5_from_config, load_vision
from training.objectives import CLIPExample, CLIPObjective, Collator, LVLMExample, LVLMObjective, PixelPreprocessor
from training.trainer import train

ANSWERS = [
    "A tabby cat sleeps on a wooden chair next to a sunny window.",
    "An astronaut in an orange suit stands in front of a flag.",
    "A cup of black coffee on a white saucer on a table.",
    "A red rocket launches into a clear blue sky with smoke.",
    "A red motorcycle is parked in a garage with tools.",
    "Thousands of galaxies shine in the deep field of space.",
    "Old coins lie on a dark cloth under soft light.",
    "A man with a camera on a tripod stands in a field.",
]
FEATURE_WIDTH = 16
T5_WIDTH = 64  # the tiny T5's d_model = the aligner's output width


@pytest.fixture(scope="module")
def synthetic_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage-A shards for 8 real answers; a token's feature is a fixed random vector, so text is recoverable."""
    folder = tmp_path_factory.mktemp("synthetic_features")
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    table = torch.randn(len(tokenizer), FEATURE_WIDTH, generator=torch.Generator().manual_seed(0))
    samples = []
    for number, answer in enumerate(ANSWERS):
        ids = torch.tensor(tokenizer(answer).input_ids + [151645])
        samples.append(GeneratedSample(f"{number}", "Describe the image concisely.", table[ids], ids, answer))
    write_manifest_if_new(folder, {"vlm": "synthetic", "vlm_path": str(QWEN_TOKENIZER), "hidden_size": FEATURE_WIDTH})
    write_shard(folder, 0, samples[:5], FEATURE_WIDTH, skipped=0)
    write_shard(folder, 1, samples[5:], FEATURE_WIDTH, skipped=0)
    return folder


def quoted(path: Path) -> str:
    return json.dumps(str(path))


def lvlm_settings(t5_folder: Path, features: Path, *extra: str) -> list[str]:
    return [f"model.t5={quoted(t5_folder)}", f"precompute.features_dir={quoted(features)}", "model.aligner_hidden_dim=64", *extra]


def clip_settings(t5_folder: Path, vision_file: Path, photo_set: Path, *extra: str) -> list[str]:
    return ['run.variant="clip"', f"model.t5={quoted(t5_folder)}", f"model.vision={quoted(vision_file)}",
            'model.vision_dtype="fp32"', f"data.captions={quoted(photo_set / 'captions.jsonl')}", "model.aligner_hidden_dim=64", *extra]


def losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def assert_learns(values: list[float]) -> None:
    start, end = sum(values[:3]) / 3, sum(values[-5:]) / 5
    assert end < start - 1.0, f"loss {start:.3f} -> {end:.3f}: no clear fall"


def test_aligner_norm_starts_as_the_t5_encoder_final_norm(run_config, t5_folder: Path):
    t5 = frozen_t5_from_config(run_config(f"model.t5={quoted(t5_folder)}"))
    assert t5.model.encoder is None  # LVLM keeps only the decoder
    aligner = build_aligner("lvlm", 16, t5)
    stored = load_file(str(t5_folder / "model.safetensors"))["encoder.final_layer_norm.weight"]
    assert torch.equal(aligner.norm.weight, stored) and not torch.equal(stored, torch.ones_like(stored))
    assert not any(p.requires_grad for p in t5.model.parameters()) and t5.model.training  # dropout on by default


def test_the_t5_keeps_what_the_variant_needs_at_its_dtype(run_config, t5_folder: Path):
    stored = load_file(str(t5_folder / "model.safetensors"))["encoder.final_layer_norm.weight"]
    t5 = frozen_t5_from_config(run_config('run.variant="clip"', f"model.t5={quoted(t5_folder)}", 'model.t5_dtype="bf16"',
                                          "model.t5_dropout=false"))
    assert t5.model.encoder is not None and t5.model.dtype == torch.bfloat16 and not t5.model.training
    assert not any(p.requires_grad for p in t5.model.parameters()) and t5.name == "tiny-flan-t5"
    assert t5.tokenizer("a cat").input_ids == AutoTokenizer.from_pretrained(str(t5_folder))("a cat").input_ids
    # the aligner's norm starts from the stored float32 weight, not from its bf16 copy in the model
    assert t5.encoder_norm.dtype == torch.float32 and torch.equal(t5.encoder_norm, stored)
    assert not torch.equal(t5.model.encoder.final_layer_norm.weight.float(), stored)


def test_a_sharded_t5_gives_its_stored_norm(run_config, t5_folder: Path, tmp_path: Path):
    from transformers import T5ForConditionalGeneration

    folder = tmp_path / "sharded-t5"
    T5ForConditionalGeneration.from_pretrained(str(t5_folder)).save_pretrained(str(folder), max_shard_size="3MB")
    AutoTokenizer.from_pretrained(str(t5_folder)).save_pretrained(str(folder))
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 1
    stored = load_file(str(t5_folder / "model.safetensors"))["encoder.final_layer_norm.weight"]
    t5 = frozen_t5_from_config(run_config(f"model.t5={quoted(folder)}", 'model.t5_dtype="bf16"'))
    assert torch.equal(t5.encoder_norm, stored) and t5.model.training  # dropout on by default
    aligner = build_aligner("lvlm", 16, t5)
    assert torch.equal(aligner.norm.weight, stored)


def test_a_t5_without_safetensors_gives_its_loaded_norm(run_config, t5_folder: Path, tmp_path: Path):
    """Weights in ``pytorch_model.bin`` only: the norm is the loaded model's (nothing to read at a stored precision)."""
    from transformers import T5ForConditionalGeneration

    folder = tmp_path / "bin-t5"
    model = T5ForConditionalGeneration.from_pretrained(str(t5_folder))
    model.config.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(str(t5_folder)).save_pretrained(str(folder))
    assert not list(folder.glob("*.safetensors")) and (folder / "pytorch_model.bin").is_file()
    stored = load_file(str(t5_folder / "model.safetensors"))["encoder.final_layer_norm.weight"]
    t5 = frozen_t5_from_config(run_config(f"model.t5={quoted(folder)}"))
    assert t5.encoder_norm.dtype == torch.float32 and torch.equal(t5.encoder_norm, stored)


def test_aligner_init_is_the_references_per_variant(run_config, t5_folder: Path):
    t5 = frozen_t5_from_config(run_config(f"model.t5={quoted(t5_folder)}"))
    torch.manual_seed(0)
    clip = build_aligner("clip", 48, t5)
    assert (clip.in_proj.weight.shape, clip.out_proj.weight.shape) == ((T5_WIDTH, 48), (T5_WIDTH, T5_WIDTH))  # hidden: d_model
    for linear in (clip.in_proj, clip.out_proj):  # HF _init_weights: N(0, 0.02), zero bias
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.1) and abs(linear.weight.mean().item()) < 0.002
        assert not linear.bias.any()
    lvlm = build_aligner("lvlm", 48, t5, hidden_dim=24)
    assert (lvlm.in_proj.weight.shape, lvlm.out_proj.weight.shape) == ((24, 48), (T5_WIDTH, 24))
    for linear, fan_in in ((lvlm.in_proj, 48), (lvlm.out_proj, 24)):  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = fan_in**-0.5
        assert linear.weight.abs().max().item() <= bound and linear.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)
        assert linear.bias.abs().max().item() <= bound and linear.bias.abs().max().item() > bound / 2
    for aligner in (clip, lvlm):
        assert torch.equal(aligner.norm.weight, t5.encoder_norm) and aligner.norm.weight.dtype == torch.float32


def test_t5_and_vision_settings_are_explained(run_config, tmp_path: Path, vision_file: Path):
    with pytest.raises(ThinkDiffError, match="^set \\[model\\] t5 to a Flan-T5 Hugging Face folder$"):
        frozen_t5_from_config(run_config())
    with pytest.raises(ThinkDiffError, match=f"^{re.escape(str(tmp_path))} is not a T5 model folder; download google/flan-t5-xxl there$"):
        frozen_t5_from_config(run_config(f"model.t5={quoted(tmp_path)}"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ThinkDiffError, match=f"^could not load the T5 in {re.escape(str(tmp_path))}: .+ It must hold the complete "
                                             "download of https://huggingface.co/google/flan-t5-xxl.$"):
        frozen_t5_from_config(run_config(f"model.t5={quoted(tmp_path)}"))
    vision = load_vision(vision_file, torch.bfloat16)
    assert not vision.training and not any(p.requires_grad for p in vision.parameters())
    assert {p.dtype for p in vision.parameters()} == {torch.bfloat16}


def test_lvlm_overfits_a_fixed_set(run_config, t5_folder: Path, synthetic_features: Path):
    config = run_config(*lvlm_settings(t5_folder, synthetic_features, "train.batch_size=8", "train.max_steps=40",
                                       "model.t5_dropout=false", "optim.lr=3e-2", "optim.min_lr=3e-2"))
    assert_learns(losses(train(config)))


def test_clip_overfits_a_fixed_set(run_config, t5_folder: Path, vision_file: Path, photo_set: Path):
    config = run_config(*clip_settings(t5_folder, vision_file, photo_set, "train.batch_size=8", "train.max_steps=80",
                                       "model.t5_dropout=false", "optim.lr=3e-2", "optim.min_lr=3e-2"))
    assert_learns(losses(train(config)))


def test_a_run_logs_its_steps_rates_and_counts(run_config, t5_folder: Path, synthetic_features: Path, capsys):
    """Rows every ``log_every`` steps and at each checkpoint, each the sample-weighted mean loss since the last row."""
    settings = lvlm_settings(t5_folder, synthetic_features, "train.batch_size=4", "train.max_steps=3", "model.t5_dropout=false",
                             "optim.warmup_steps=4", "optim.warmup_lr=1e-4", "optim.lr=1e-3")
    every_step = losses(train(run_config(*settings, output="every")))
    capsys.readouterr()
    config = run_config(*settings, "train.log_every=2", "train.checkpoint_every=2")
    run = train(config)
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], float(r["lr"]), r["samples"], r["skipped"]) for r in rows] == [
        ("2", pytest.approx(1e-4 + 9e-4 / 4), "8", "0"), ("3", pytest.approx(1e-4 + 9e-4 / 2), "12", "0")]  # the steps' rates
    assert float(rows[0]["loss"]) == pytest.approx(sum(every_step[:2]) / 2, rel=1e-6)  # steps 1 and 2, 4 samples each
    assert float(rows[1]["loss"]) == pytest.approx(every_step[2], rel=1e-6)
    assert 0 <= float(rows[0]["elapsed_s"]) <= float(rows[1]["elapsed_s"])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert len(printed) == 2
    for line, row, lr in zip(printed, rows, ("0.000325", "0.00055"), strict=True):
        assert re.fullmatch(f"step {row['step']}/3 loss {float(row['loss']):.4f} lr {lr} samples {row['samples']} skipped 0 "
                            r"ETA \d+m\d\ds", line), line
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002", "step-00000003"]
    _, record = read_checkpoint(run / "checkpoints" / "step-00000003")
    assert record["train"] == {"step": 3, "samples": 12, "skipped": 0}
    assert (record["variant"], record["source_model"], record["t5_model"]) == ("lvlm", "synthetic", "tiny-flan-t5")
    assert record["config"] == json.loads(json.dumps(config.to_dict()))  # as JSON stores it (tuples as lists)
    assert (run / "loss.png").stat().st_size > 0


@pytest.mark.parametrize("variant, precision, vision_dtype", [("lvlm", "no", "fp32"), ("lvlm", "bf16", "fp32"),
                                                               ("clip", "no", "fp32"), ("clip", "no", "bf16")])
def test_the_first_steps_loss_is_rebuilt_by_hand(run_config, t5_folder: Path, synthetic_features: Path, vision_file: Path,
                                                 photo_set: Path, variant: str, precision: str, vision_dtype: str):
    """Step 1's logged loss from its parts: the run seed's aligner init, the first batch of the run's order, each
    sample's draw from the run seed with the [train] limits, the objective of the variant (under bf16 autocast when
    asked; CLIP's vision tower in [model] vision_dtype)."""
    from tests.training.test_masking import reference_pre_caption
    from training.batching import StepBatches
    from training.pairs import pairs_from_config

    extra = ["train.batch_size=4", "train.max_steps=1", "model.t5_dropout=false", f'run.mixed_precision="{precision}"',
             "run.seed=7", "train.max_split_tokens=3", "train.max_target_tokens=5", "train.max_caption_words=4",
             "model.aligner_hidden_dim=32"]  # not the T5's width, the aligner's default
    settings = (lvlm_settings(t5_folder, synthetic_features, *extra) if variant == "lvlm"
                else clip_settings(t5_folder, vision_file, photo_set, *extra, f'model.vision_dtype="{vision_dtype}"'))
    config = run_config(*settings, output="runs/first")  # a nested folder, made as needed
    with (train(config) / "metrics.csv").open() as f:
        logged = list(csv.DictReader(f))[0]
    t5 = frozen_t5_from_config(config)
    examples: list = []
    if variant == "lvlm":
        tokenizer, shards = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER)), FeatureShards(synthetic_features)
        refs = next(iter(StepBatches([len(shards)], [1.0], 4, 7, 0, 1, 0, 1)))
        for epoch, index in refs:
            features, ids = shards[index]
            split = random.Random(f"7:{epoch}:{index}").randint(1, min(len(ids) - 1, 3))
            examples.append(LVLMExample(features[:split], tokenizer.decode(ids[split:].tolist(), skip_special_tokens=True)))
        objective, in_dim = LVLMObjective(t5.model), FEATURE_WIDTH
    else:
        vision, pairs = load_vision(vision_file, DTYPES[vision_dtype]), pairs_from_config(config)
        refs = next(iter(StepBatches([len(pairs)], [1.0], 4, 7, 0, 1, 0, 1)))
        for epoch, index in refs:
            pair = pairs[index]
            words = reference_pre_caption(pair.caption, 4).split(" ") if pair else [""]
            if words != [""]:
                point = random.Random(f"7:{epoch}:{index}").randint(1, len(words) - 1) if len(words) > 1 else 0
                pixels = PixelPreprocessor.of(vision)([pair.image])[0]
                examples.append(CLIPExample(pixels, " ".join(words[:point]), " ".join(words[point:])))
        objective, in_dim = CLIPObjective(t5.model, vision), vision.hidden_size
    assert (int(logged["samples"]), int(logged["skipped"])) == (len(examples), 4 - len(examples))
    torch.manual_seed(7)
    aligner = build_aligner(variant, in_dim, t5, 32)
    batch = Collator(t5.tokenizer, 5)(examples)
    with torch.no_grad():
        plain = objective.loss(aligner, batch).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = objective.loss(aligner, batch).item()
    assert abs(plain - autocast) > 1e-4  # the test tells them apart
    assert float(logged["loss"]) == pytest.approx(autocast if precision == "bf16" else plain, rel=1e-6)


def test_steps_whose_samples_are_all_skipped_still_step_together(run_config, t5_folder: Path, tmp_path: Path):
    """One-token answers have no split: such steps log no loss, and the optimizer steps with zero gradients (AdamW's
    decoupled weight decay alone moves the weight matrices). The tokenizer comes from [precompute] vlm when set."""
    folder = tmp_path / "features"
    table = torch.randn(4, FEATURE_WIDTH, generator=torch.Generator().manual_seed(0))
    samples = [GeneratedSample(f"{n}", "Describe.", table[n:n + 1], torch.tensor([151645]), "") for n in range(4)]
    write_manifest_if_new(folder, {"vlm": "synthetic", "vlm_path": str(tmp_path / "moved"), "hidden_size": FEATURE_WIDTH})
    write_shard(folder, 0, samples, FEATURE_WIDTH, skipped=0)
    config = run_config(*lvlm_settings(t5_folder, folder, "train.batch_size=2", "train.max_steps=2", "model.t5_dropout=false"),
                        f"precompute.vlm={quoted(QWEN_TOKENIZER)}", "model.aligner_hidden_dim=0")
    run = train(config)
    with (run / "metrics.csv").open() as f:
        assert [(r["loss"], r["samples"], r["skipped"]) for r in csv.DictReader(f)] == [("nan", "0", "2"), ("nan", "0", "4")]
    t5 = frozen_t5_from_config(config)  # loaded first, as the trainer does (transformers 4.x draws from the RNG there)
    torch.manual_seed(config.run.seed)  # the aligner's init: the run seed, then the reference init
    start = build_aligner("lvlm", FEATURE_WIDTH, t5).state_dict()
    weights, _ = read_checkpoint(run / "checkpoints" / "step-00000002")
    decay = (1 - 1e-3 * 0.05) ** 2  # lr 1e-3, weight decay 0.05, two steps
    for key, value in start.items():
        expected = value * decay if key.endswith("proj.weight") else value
        assert torch.allclose(weights[key], expected, rtol=1e-6, atol=0), key


def test_clip_needs_a_vision_file(run_config, t5_folder: Path, photo_set: Path):
    config = run_config('run.variant="clip"', f"model.t5={quoted(t5_folder)}", f"data.captions={quoted(photo_set / 'captions.jsonl')}")
    with pytest.raises(ThinkDiffError, match=r"^set \[model\] vision to a vision file \(python -m thinkdiff extract-vision "
                                             r"BLIP2_FOLDER FILE\)$"):
        train(config)


def test_resume_continues_bit_identically(run_config, t5_folder: Path, synthetic_features: Path, capsys):
    settings = lvlm_settings(t5_folder, synthetic_features, "train.batch_size=4", "train.checkpoint_every=3")  # dropout on
    straight = train(run_config(*settings, "train.max_steps=6", output="straight"))
    stopped = train(run_config(*settings, "train.max_steps=3", output="resumed"))
    assert [p.name for p in list_checkpoints(stopped)] == ["step-00000003"]
    capsys.readouterr()
    resumed = train(run_config(*settings, "train.max_steps=6", output="resumed"))
    printed = capsys.readouterr().out
    assert "step-00000003 (step 3)" in printed  # it started at the checkpoint's step, not from scratch
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("step ")] == ["4/6", "5/6", "6/6"]
    for name in ("aligner.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(straight / "checkpoints/step-00000006" / name)), load_file(str(resumed / "checkpoints/step-00000006" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert losses(straight) == losses(resumed) and len(losses(resumed)) == 6


def test_lvlm_end_to_end_from_precomputed_features(run_config, t5_folder: Path, lvlm_features: Config, tmp_path: Path):
    config = run_config(*lvlm_settings(t5_folder, lvlm_features.path(lvlm_features.precompute.features_dir),
                                       "train.batch_size=4", "train.max_steps=4", "train.checkpoint_every=2", "data.num_workers=2"))
    run_dir = train(config)
    assert (run_dir / "loss.png").stat().st_size > 0 and len(losses(run_dir)) == 4
    weights = load_aligner_weights(export_aligner(run_dir, tmp_path / "lvlm.safetensors"))
    assert weights.metadata["variant"] == "lvlm" and weights.metadata["source_model"] == "tiny-random-Qwen2-VL"
    assert weights.metadata["training_steps"] == "4"
    aligner = Aligner.from_state_dict(weights.state)
    features, _ = FeatureShards(config.path(config.precompute.features_dir))[0]
    assert aligner(features.float()).shape == (len(features), T5_WIDTH)


def test_clip_end_to_end_counts_bad_samples(run_config, t5_folder: Path, vision_file: Path, photo_set: Path, tmp_path: Path):
    config = run_config(*clip_settings(t5_folder, vision_file, photo_set, "train.batch_size=4", "train.max_steps=4",
                                       "data.num_workers=2"))
    run_dir = train(config)
    with (run_dir / "metrics.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert (int(last["samples"]), int(last["skipped"])) == (14, 2)  # one epoch: the unreadable file, the empty caption
    weights = load_aligner_weights(export_aligner(run_dir, tmp_path / "clip.safetensors"))
    assert weights.variant == "clip" and weights.in_dim == TINY_VISION_TOWER["hidden_size"] == 48
    tokens = VisionTokenEncoder.from_file(vision_file).encode([Image.new("RGB", (64, 48), "red")])
    with torch.inference_mode():
        assert Aligner.from_state_dict(weights.state)(tokens).shape == (1, 65, T5_WIDTH)


def test_clip_trains_on_weighted_sources(run_config, t5_folder: Path, vision_file: Path, photo_set: Path, photo_tar: Path):
    """The reference's CLIP mix, in miniature: a captions folder and tar shards with weights 3 : 1."""
    sources = (f"data.sources=[{{captions={quoted(photo_set / 'captions.jsonl')}, weight=3}}, "
               f"{{shards=[{quoted(photo_tar)}], weight=1}}]")
    settings = [s for s in clip_settings(t5_folder, vision_file, photo_set) if not s.startswith("data.captions")]
    run_dir = train(run_config(*settings, sources, "train.batch_size=4", "train.max_steps=3", "train.checkpoint_every=3"))
    assert len(losses(run_dir)) == 3
    state = json.loads((run_dir / "checkpoints" / "step-00000003" / "state.json").read_text())
    assert [source["weight"] for source in state["config"]["data"]["sources"]] == [3.0, 1.0]


def test_command_line_bf16_align_and_export(tmp_path: Path, t5_folder: Path, synthetic_features: Path):
    (tmp_path / "run.toml").write_text('[run]\noutput_dir = "out"\nmixed_precision = "bf16"\n[train]\nbatch_size = 4\n'
                                       'max_steps = 2\n[data]\nnum_workers = 0\n')
    overrides = [item for setting in lvlm_settings(t5_folder, synthetic_features) for item in ("--set", setting)]
    assert cli(["align", "--config", str(tmp_path / "run.toml"), *overrides]) == 0
    assert cli(["export", "--config", str(tmp_path / "run.toml"), *overrides]) == 0
    assert load_aligner_weights(tmp_path / "out" / "aligner.safetensors").in_dim == FEATURE_WIDTH


def test_command_line_plot_export_and_errors(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    """The commands' outputs and messages, on a run folder made by hand (a metrics log and two checkpoints)."""
    import torch.distributed as dist

    from tests.training.test_checkpoint import _Processes
    from training import trainer
    from training.checkpoint import TrainState, save_checkpoint
    from training.metrics import MetricsLog

    (tmp_path / "run.toml").write_text('[run]\noutput_dir = "out"\n')
    run = tmp_path / "out"
    run.mkdir()
    MetricsLog(run / "metrics.csv", 0).append(step=1, loss=2.0, lr=1e-4, samples=1, skipped=0, elapsed_s=1.0)
    assert cli(["plot", "--config", str(tmp_path / "run.toml")]) == 0
    assert capsys.readouterr().out == f"wrote {run / 'loss.png'}\n" and (run / "loss.png").stat().st_size > 0

    aligner = Aligner(FEATURE_WIDTH, 8, T5_WIDTH)
    for step in (1, 2):
        save_checkpoint(_Processes(), run, aligner, torch.optim.AdamW(aligner.parameters()), TrainState(step),
                        {"variant": "lvlm", "source_model": "Qwen2-VL", "t5_model": "flan-t5"}, keep=0)
    assert cli(["export", "--config", str(tmp_path / "run.toml")]) == 0
    assert capsys.readouterr().out == f"wrote {run / 'aligner.safetensors'}\n"
    assert load_aligner_weights(run / "aligner.safetensors").metadata["training_steps"] == "2"
    first = run / "checkpoints" / "step-00000001"
    assert cli(["export", "--config", str(tmp_path / "run.toml"), "--checkpoint", str(first),
                "--output", str(tmp_path / "a.safetensors")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'a.safetensors'}\n"
    assert load_aligner_weights(tmp_path / "a.safetensors").metadata["training_steps"] == "1"

    monkeypatch.setattr(trainer, "train", lambda config: config.path(config.run.output_dir) / "trained")
    assert cli(["align", "--config", str(tmp_path / "run.toml"), "--set", 'run.output_dir="other"']) == 0
    assert capsys.readouterr().out == f"run folder {tmp_path / 'other' / 'trained'}\n"

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    assert cli(["precompute", "--config", str(tmp_path / "run.toml")]) == 1  # an error still closes the process group
    assert not dist.is_initialized()
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == "error: set [precompute] vlm to a Qwen2-VL(-Instruct) Hugging Face folder\n"
    assert cli(["plot", "--set", "optim.lrr=1"]) == 1 and capsys.readouterr().err.startswith("error: ")


def test_command_line_help_lists_the_commands_and_options(capsys, monkeypatch: pytest.MonkeyPatch):
    """The help page as docs/training.md describes the commands: ``python -m training COMMAND``, ``--config FILE``, any
    number of ``--set section.key=value`` (TOML values), ``export``'s ``--output`` and ``--checkpoint``."""
    import training.__main__ as entry

    monkeypatch.setenv("COLUMNS", "200")  # the usage on one line
    with pytest.raises(SystemExit) as exit_info:
        cli(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m training [-h] [--config CONFIG] [--set SECTION.KEY=VALUE] [--output OUTPUT] "
                           "[--checkpoint CHECKPOINT] {precompute,align,export,plot}\n")
    assert entry.__doc__ in text  # the commands' list as written, not re-wrapped
    words = " ".join(text.split())  # an option's help may start on its own line
    for option, meaning in (("--config CONFIG", "the run's TOML file"),
                            ("--set SECTION.KEY=VALUE", "override a config value (TOML syntax for the value), repeatable"),
                            ("--output OUTPUT", "export: the .safetensors file to write (default: RUN/aligner.safetensors)"),
                            ("--checkpoint CHECKPOINT", "export: a checkpoint folder (default: the latest)")):
        assert re.search(re.escape(f"{option} {meaning}") + "(?= --|$)", words), option  # up to the next option
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", "--config", "run.toml"])
    assert exit_info.value.code == 2 and "argument command: invalid choice: 'train'" in capsys.readouterr().err


def test_worker_preprocessing_is_the_librarys(vision_file: Path):
    vision = VisionTokenEncoder.from_file(vision_file)
    images = [Image.new("RGB", (64, 48), "red"), Image.new("L", (30, 90), 128).convert("RGB")]
    assert torch.equal(PixelPreprocessor.of(vision)(images), vision.preprocess(images))


def assert_token_mean(objective, aligner, collate: Collator, examples: list, tolerance: float) -> None:
    """The batch's cross-entropy is the mean over all target tokens of the samples' own (unpadded) losses."""
    with torch.no_grad():
        batched = objective.loss(aligner, collate(examples)).item()
        alone = [(objective.loss(aligner, collate([e])).item(), collate([e])["decoder_attention_mask"].sum().item())
                 for e in examples]
    assert alone[0][1] != alone[1][1]  # targets of other lengths: a token mean, not a mean of the two
    expected = sum(loss * tokens for loss, tokens in alone) / sum(tokens for _, tokens in alone)
    assert batched == pytest.approx(expected, rel=tolerance)


@pytest.mark.parametrize("t5_dtype, tolerance", [("fp32", 1e-5), ("bf16", 2e-2)])
def test_lvlm_loss_of_a_padded_batch_is_the_token_mean_of_its_samples(run_config, t5_folder: Path, t5_dtype: str,
                                                                      tolerance: float):
    """Padding short features next to long ones changes nothing (a bf16 T5 reads the float32 aligner's output in its
    own dtype)."""
    t5 = frozen_t5_from_config(run_config(f"model.t5={quoted(t5_folder)}", f'model.t5_dtype="{t5_dtype}"', "model.t5_dropout=false"))
    torch.manual_seed(0)
    aligner = build_aligner("lvlm", FEATURE_WIDTH, t5)
    features = torch.randn(9, FEATURE_WIDTH, generator=torch.Generator().manual_seed(1))
    examples = [LVLMExample(features[:2], "red car"), LVLMExample(features[2:], "a page")]
    assert_token_mean(LVLMObjective(t5.model), aligner, Collator(t5.tokenizer, 32), examples, tolerance)


@pytest.mark.parametrize("t5_dtype, tolerance", [("fp32", 1e-5), ("bf16", 2e-2)])
def test_clip_loss_of_a_padded_batch_is_the_token_mean_of_its_samples(run_config, t5_folder: Path, vision_file: Path,
                                                                      t5_dtype: str, tolerance: float):
    """Padding a short caption prefix next to a long one changes nothing (a bf16 T5 reads the float32 aligner's output
    in its own dtype)."""
    config = run_config('run.variant="clip"', f"model.t5={quoted(t5_folder)}", f'model.t5_dtype="{t5_dtype}"',
                        "model.t5_dropout=false")
    t5, vision = frozen_t5_from_config(config), load_vision(vision_file, torch.float32)
    torch.manual_seed(0)
    aligner = build_aligner("clip", vision.hidden_size, t5)
    pixels = PixelPreprocessor.of(vision)([Image.new("RGB", (64, 48), "red"), Image.new("RGB", (40, 40), "blue")])
    examples = [CLIPExample(pixels[0], "a", "red car"), CLIPExample(pixels[1], "a big blue square drawn on a white", "page")]
    assert_token_mean(CLIPObjective(t5.model, vision), aligner, Collator(t5.tokenizer, 32), examples, tolerance)
