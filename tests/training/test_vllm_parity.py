"""The vLLM stage-A backend on vLLM's CPU build: its shards are the transformers backend's for the same tokens, and both
of its phases resume. Runs in .dev/venv-vllm (scripts/bootstrap_vllm.sh; the last part of scripts/test.sh).

The model is the tiny random Qwen2-VL with 2 heads of 32 (vLLM's CPU attention needs head sizes of 32 and up), fp32
weights and fp32 stored features, so that the comparison is of the computation, not of bf16 rounding.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList

from tests.support.tiny_models import make_qwen2vl
from tests.training.conftest import precompute_settings, tiny_run_config
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder
from training.config import Config
from training.feature_store import finished_shards, shard_stem, write_shard
from training.pairs import pairs_from_config
from training.precompute import precompute
from training.stage_a_plan import ReadyImages
from training.transformers_stage_a import generate_batch
from training.vllm_stage_a import TOKENS_DIR, answer_rows, answer_states, engine_arguments, prompt_ids, tokens_file

pytest.importorskip("vllm", reason="vLLM is not installed in this environment: the vLLM backend's parity test runs in "
                                   ".dev/venv-vllm (scripts/bootstrap_vllm.sh; the last part of scripts/test.sh)")

# Largest difference between vLLM's final-norm states (one prefill of prompt + answer) and the library's (incremental
# decoding with a KV cache) in fp32; measured up to ~3e-6 on the tiny model.
STATE_TOLERANCE = 5e-5
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine core in the phase's own process: starts in half the time
              "VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB


@pytest.fixture(scope="module", autouse=True)
def small_cpu_engines():
    saved = {name: os.environ.get(name) for name in ENGINE_ENV}
    os.environ.update(ENGINE_ENV)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def hd32_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_qwen2vl(tmp_path_factory.mktemp("models") / "tiny-random-Qwen2-VL-hd32", width="tiny-hd32")


def vllm_config(root: Path, vlm: Path, photos: Path) -> Config:
    return tiny_run_config(root / "run", *precompute_settings(vlm, photos, root / "features"), 'precompute.backend="vllm"',
                           'precompute.storage_dtype="fp32"', "precompute.max_new_tokens=10",
                           "precompute.vllm={enforce_eager = true}")  # no torch.compile: minutes on a 2-core CPU


def features_dir(config: Config) -> Path:
    return config.path(config.precompute.features_dir)


@pytest.fixture(scope="module")
def vllm_features(tmp_path_factory: pytest.TempPathFactory, hd32_vlm: Path, photo_set: Path) -> Config:
    """Stage A with the vLLM backend, once: both phases, four shards."""
    config = vllm_config(tmp_path_factory.mktemp("vllm_stage_a"), hd32_vlm, photo_set)
    precompute(config)
    return config


class ForceTokens(LogitsProcessor):
    """Teacher forcing through ``generate``: the next token is always the given answer's."""

    def __init__(self, answer: list[int], prompt_length: int) -> None:
        self.answer, self.prompt_length = answer, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = min(input_ids.shape[1] - self.prompt_length, len(self.answer) - 1)
        return torch.full_like(scores, -torch.inf).index_fill_(-1, torch.tensor([self.answer[step]]), 0.0)


def shard_files(folder: Path, shard: int) -> tuple[dict[str, torch.Tensor], dict]:
    stem = shard_stem(shard)
    return load_file(str(folder / f"{stem}.safetensors")), json.loads((folder / f"{stem}.json").read_text())


def test_shards_equal_the_transformers_backend_for_the_same_tokens(vllm_features: Config, hd32_vlm: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """The transformers backend's own code (generate_batch: prepare, generate, final-norm capture, stop at EOS) with
    vLLM's tokens forced writes the same shards: identical token ids, texts and offsets, states within STATE_TOLERANCE."""
    config, folder = vllm_features, features_dir(vllm_features)
    pre, seed = config.precompute, config.run.seed
    encoder = QwenVLEncoder.from_folder(hd32_vlm, dtype=torch.float32)
    ready = ReadyImages(pairs_from_config(config, require_caption=False), pre.min_pixels, pre.max_pixels)
    answer: list[int] = []

    def forced(self: SamplingOptions, eos_token_id: int | list[int], pad_token_id: int, prompt_length: int) -> dict:
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                                  pad_token_id=pad_token_id)
        return {"generation_config": config, "logits_processor": LogitsProcessorList([ForceTokens(answer, prompt_length)])}

    monkeypatch.setattr(SamplingOptions, "generate_kwargs", forced)
    assert finished_shards(folder) == [0, 1, 2, 3]
    worst = 0.0
    for shard in finished_shards(folder):
        tensors, records = shard_files(folder, shard)
        offsets, samples = tensors["offsets"].tolist(), []
        for index in range(shard * pre.samples_per_shard, min((shard + 1) * pre.samples_per_shard, len(ready))):
            item = ready[index]
            if item[1] is None:
                continue
            row = len(samples)
            answer[:] = tensors["token_ids"][offsets[row]:offsets[row + 1]].tolist()
            samples.extend(generate_batch(encoder, [item], pre, seed))
        write_shard(tmp_path, shard, samples, encoder.hidden_size, skipped=records["skipped"], dtype=torch.float32)
        theirs, their_records = shard_files(tmp_path, shard)
        assert their_records == records  # keys, instructions, texts, skipped
        assert torch.equal(theirs["token_ids"], tensors["token_ids"]) and torch.equal(theirs["offsets"], tensors["offsets"])
        torch.testing.assert_close(tensors["features"], theirs["features"], rtol=0, atol=STATE_TOLERANCE)
        worst = max(worst, float((tensors["features"] - theirs["features"]).abs().max()))
    print(f"largest state difference vLLM vs transformers: {worst:.2e}")


def tokens_record(config: Config, shard: int, tokenizer: AutoTokenizer) -> dict:
    """The tokens file phase 1 wrote for a finished shard (rebuilt from the shard)."""
    tensors, records = shard_files(features_dir(config), shard)
    pairs = pairs_from_config(config, require_caption=False)
    per_shard = config.precompute.samples_per_shard
    index_of = {pairs.key(i): i for i in range(shard * per_shard, min((shard + 1) * per_shard, len(pairs)))}
    offsets, samples = tensors["offsets"].tolist(), []
    for row, sample in enumerate(records["samples"]):
        samples.append({"index": index_of[sample["key"]], **sample, "prompt_ids": prompt_ids(tokenizer, sample["instruction"]),
                        "token_ids": tensors["token_ids"][offsets[row]:offsets[row + 1]].tolist()})
    return {"samples": samples, "skipped": records["skipped"]}


def test_an_interrupted_states_phase_resumes(vllm_features: Config, hd32_vlm: Path, photo_set: Path, tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]):
    """Interrupted after the tokens phase, while writing shard 3: shard 0 finished, shards 1-3 answered, shard 3 half
    written. The rerun starts no generation engine (no tokens phase, whose process would print its progress) and turns
    1-3 into the uninterrupted run's shards. (Which shards each phase takes up on a rerun is tested without vLLM in
    test_vllm_stage_a.py.)"""
    done, config = features_dir(vllm_features), vllm_config(tmp_path, hd32_vlm, photo_set)
    folder = features_dir(config)
    (folder / TOKENS_DIR).mkdir(parents=True)
    for name in ("manifest.json", "shard-000000.json", "shard-000000.safetensors"):
        shutil.copy(done / name, folder / name)
    tokenizer = AutoTokenizer.from_pretrained(str(hd32_vlm))
    for shard in (1, 2, 3):
        tokens_file(folder, shard).write_text(json.dumps(tokens_record(vllm_features, shard, tokenizer)))
    (folder / "shard-000003.safetensors").write_bytes(b"half written")
    untouched = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-000000.*")}
    capfd.readouterr()
    precompute(config)
    printed = capfd.readouterr().out
    assert "[precompute vllm] states phase: shards 1, 2, 3" in printed and "[precompute vllm states]: 11/11 samples" in printed
    assert "tokens phase" not in printed and "[precompute vllm tokens]" not in printed
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-000000.*")} == untouched
    assert finished_shards(folder) == [0, 1, 2, 3] and not (folder / TOKENS_DIR).exists()
    for shard in (1, 2, 3):
        (ours, our_records), (theirs, their_records) = shard_files(folder, shard), shard_files(done, shard)
        assert our_records == their_records
        assert torch.equal(ours["token_ids"], theirs["token_ids"]) and torch.equal(ours["offsets"], theirs["offsets"])
        torch.testing.assert_close(ours["features"], theirs["features"], rtol=0, atol=1e-6)


def test_the_states_are_streamed_as_answer_rows(hd32_vlm: Path, photo_set: Path, tmp_path: Path):
    """answer_states keeps at most ``in_flight`` requests in the engine and, of each, a copy of its answer rows only
    (owning just their bytes, not the step's batch of every position that vLLM's outputs view), equal to LLM.encode's."""
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    config = vllm_config(tmp_path, hd32_vlm, photo_set)
    llm = LLM(**engine_arguments(config, runner="pooling", convert="embed",
                                 pooler_config={"task": "token_embed", "use_activation": False}))
    tokenizer = AutoTokenizer.from_pretrained(str(hd32_vlm))
    answers = [[9707 + i] * (3 + 2 * i) for i in range(5)]
    prompts = [TokensPrompt(prompt_token_ids=prompt_ids(tokenizer, "Describe the image.") + answer,
                            multi_modal_data={"image": Image.new("RGB", (56 + 28 * i, 84), (40 * i, 90, 200))})
               for i, answer in enumerate(answers)]
    engine, in_engine = llm.llm_engine, []

    class Watched:  # the real engine, its number of requests seen at every step
        def __getattr__(self, name: str):
            return getattr(engine, name)

        def step(self):
            in_engine.append(engine.get_num_unfinished_requests())
            return engine.step()

    rows = answer_states(Watched(), iter(prompts), [len(a) for a in answers], torch.bfloat16, in_flight=2)
    expected = [answer_rows(o.outputs.data, len(a)) for o, a in zip(llm.encode(prompts, pooling_task="token_embed",
                                                                                use_tqdm=False), answers, strict=True)]
    assert max(in_engine) == 2 and len(in_engine) >= 3
    for row, reference, answer in zip(rows, expected, answers, strict=True):
        assert row.dtype == torch.bfloat16 and row.shape == (len(answer), 64)
        assert row.untyped_storage().nbytes() == row.numel() * 2  # its own rows, nothing of the batch
        assert reference.untyped_storage().nbytes() > 10 * reference.numel() * 4  # what a view would have kept
        torch.testing.assert_close(row, reference.to(torch.bfloat16), rtol=0, atol=0)
