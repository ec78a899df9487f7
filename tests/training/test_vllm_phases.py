"""The vLLM backend's two phases, in this process and in their own, on a stand-in vLLM (tests/support/vllm_stand_in)
whose answers and states are a known function of each request: which sample gets which prompt, image, seed and answer,
which rows of prompt + answer make its features, what the tokens files and shards hold, how many requests the pooling
engine holds, and what a phase's process does with an error. The real engines' shards are compared with the
transformers backend's in test_vllm_parity.py (in .dev/venv-vllm)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoConfig

from tests.training.conftest import tiny_run_config
from thinkdiff.errors import ThinkDiffError
from thinkdiff.manifest import read_manifest
from training import vllm_stage_a
from training.config import Config
from training.feature_store import finished_shards, shard_stem
from training.pairs import PairDataset, pairs_from_config
from training.precompute import precompute
from training.stage_a_plan import ReadyImages, instruction_for, manifest_for
from training.vllm_stage_a import (
    LAUNCHER_VARIABLES,
    TOKENS_DIR,
    Launch,
    answer_states,
    compute_states,
    engine_arguments,
    generate_tokens,
    prepare,
    prompt_ids,
    tokens_file,
)

STAND_IN = Path(__file__).parents[1] / "support" / "vllm_stand_in"
NON_ASCII = 'precompute.instructions=["Décris l\'image.", "What is shown?"]'
POOLING = {"runner": "pooling", "convert": "embed", "pooler_config": {"task": "token_embed", "use_activation": False}}


def imported_vllm() -> list[str]:
    return [name for name in sys.modules if name == "vllm" or name.startswith("vllm.")]


@pytest.fixture
def vllm(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The stand-in as ``vllm``, here and in the processes this test spawns (they start from this ``sys.path``); a real
    vLLM already imported comes back afterwards."""
    saved = {name: sys.modules.pop(name) for name in imported_vllm()}
    monkeypatch.syspath_prepend(str(STAND_IN))
    module = importlib.import_module("vllm")
    module.LLM.made, module.LLM.generated = [], []
    yield module
    for name in imported_vllm():
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.fixture
def progress(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each phase's Progress: its total, label and interval, and every update's (samples, tokens)."""
    made = []

    class Recorded:
        def __init__(self, total: int, label: str, every_s: float) -> None:
            self.total, self.label, self.every_s, self.updates = total, label, every_s, []
            made.append(self)

        def update(self, samples: int, tokens: int = 0) -> None:
            self.updates.append((samples, tokens))

    monkeypatch.setattr(vllm_stage_a, "Progress", Recorded)
    return made


def phase_config(tmp_path: Path, stage_a_settings, *overrides: str) -> Config:
    """The transformers backend's stage-A settings (16 entries in shards of 5; entry 14 unreadable), vLLM's backend."""
    return tiny_run_config(tmp_path / "run", *stage_a_settings(tmp_path / "features"), 'precompute.backend="vllm"',
                           'precompute.storage_dtype="fp32"', "precompute.temperature=0.7", "precompute.top_p=0.8",
                           "precompute.progress_every_s=5.0", *overrides)


@pytest.fixture
def config(tmp_path: Path, stage_a_settings) -> Config:
    return phase_config(tmp_path, stage_a_settings)


@pytest.fixture
def pairs(config: Config) -> PairDataset:
    return pairs_from_config(config, require_caption=False)


def folder_of(config: Config) -> Path:
    folder = config.path(config.precompute.features_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sized_image(config: Config, pairs: PairDataset, index: int) -> Image.Image | None:
    pair = ReadyImages(pairs, config.precompute.min_pixels, config.precompute.max_pixels)[index][1]
    return None if pair is None else pair.image


def expected_record(vllm: ModuleType, config: Config, pairs: PairDataset, tokenizer: Any, shard: int) -> dict[str, Any]:
    """A tokens file's content worked out sample by sample: the plan's instruction and seed, the stand-in's answer to
    that prompt and sized image, its text without the end token."""
    pre, seed = config.precompute, config.run.seed
    samples, skipped = [], 0
    for index in range(shard * pre.samples_per_shard, min((shard + 1) * pre.samples_per_shard, len(pairs))):
        image = sized_image(config, pairs, index)
        if image is None:
            skipped += 1
            continue
        instruction = instruction_for(pre.instructions, seed, index)
        ids = prompt_ids(tokenizer, instruction)
        params = vllm.SamplingParams(0.7, 0.8, 6, 1, True, [151645, 151643], seed + index)
        answer = vllm.answer_tokens({"prompt_token_ids": ids, "multi_modal_data": {"image": image}}, params)
        samples.append({"index": index, "key": pairs[index].key, "instruction": instruction, "seed": seed + index,
                        "prompt_ids": ids, "token_ids": answer, "text": tokenizer.decode(answer, skip_special_tokens=True)})
    return {"samples": samples, "skipped": skipped}


def expected_rows(sample: dict[str, Any], image: Image.Image, hidden_size: int) -> torch.Tensor:
    """The stand-in's states at the positions that sampled the answer: P-1 (the last prompt token) .. P+N-2, where P
    counts the prompt's positions with its image placeholder expanded (one per 28 x 28 pixels)."""
    width, height = image.size
    prompt = len(sample["prompt_ids"]) - 1 + width * height // 784
    tokens = [sample["prompt_ids"][-1], *sample["token_ids"][:-1]]
    rows = torch.arange(hidden_size, dtype=torch.float32).repeat(len(tokens), 1)
    rows[:, :4] = torch.tensor([[prompt - 1 + k, token, width, height] for k, token in enumerate(tokens)], dtype=torch.float32)
    return rows


def hidden_size_of(config: Config) -> int:
    return AutoConfig.from_pretrained(str(config.path(config.precompute.vlm))).get_text_config().hidden_size


def assert_shard(folder: Path, shard: int, record: dict[str, Any], config: Config, pairs: PairDataset,
                 dtype: torch.dtype = torch.float32) -> None:
    """A finished shard holds the tokens record's answers, texts and skipped count, and the expected rows at ``dtype``."""
    tensors = load_file(str(folder / f"{shard_stem(shard)}.safetensors"))
    records = json.loads((folder / f"{shard_stem(shard)}.json").read_text(encoding="utf-8"))
    samples = record["samples"]
    assert records == {"samples": [{k: s[k] for k in ("key", "instruction", "text")} for s in samples],
                       "skipped": record["skipped"]}
    assert tensors["token_ids"].tolist() == [t for s in samples for t in s["token_ids"]]
    lengths = [len(s["token_ids"]) for s in samples]
    assert tensors["offsets"].tolist() == [sum(lengths[:i]) for i in range(len(samples) + 1)]
    hidden = hidden_size_of(config)
    rows = [expected_rows(s, sized_image(config, pairs, s["index"]), hidden) for s in samples]
    expected = torch.cat(rows) if rows else torch.zeros(0, hidden)
    assert tensors["features"].dtype == dtype
    torch.testing.assert_close(tensors["features"], expected.to(dtype), rtol=0, atol=0)


def test_the_tokens_phase_writes_each_shards_answers(vllm, tmp_path, stage_a_settings, qwen_tokenizer, progress, capsys):
    """One generation engine with stage A's engine arguments; a request per usable sample (its prompt ids, its sized
    image, stage A's sampling with its own seed), a whole shard per call, no progress bar of vLLM's (the phase prints
    its own); each shard's answers -> its tokens file, in UTF-8 as written."""
    config = phase_config(tmp_path, stage_a_settings, NON_ASCII)
    pairs, folder = pairs_from_config(config, require_caption=False), folder_of(config)
    generate_tokens(config, pairs, [0, 2, 3])
    assert capsys.readouterr().err == ""
    assert all("Décris l'image." in tokens_file(folder, s).read_text(encoding="utf-8") for s in (0, 2))
    assert [llm.arguments for llm in vllm.LLM.made] == [engine_arguments(config)]
    records = {shard: expected_record(vllm, config, pairs, qwen_tokenizer, shard) for shard in (0, 2, 3)}
    assert sorted(p.name for p in (folder / TOKENS_DIR).iterdir()) == [tokens_file(folder, s).name for s in (0, 2, 3)]
    for shard, record in records.items():
        assert json.loads(tokens_file(folder, shard).read_text(encoding="utf-8")) == record
    assert [len(r["samples"]) for r in records.values()] == [5, 4, 1] and records[2]["skipped"] == 1
    samples = [s for r in records.values() for s in r["samples"]]
    assert any(s["token_ids"][-1] == 151645 for s in samples) and any(len(s["token_ids"]) == 6 for s in samples)
    asked = [(prompt["prompt_token_ids"], prompt["multi_modal_data"]["image"].size, params) for prompt, params in vllm.LLM.generated]
    assert asked == [(s["prompt_ids"], sized_image(config, pairs, s["index"]).size,
                      vllm.SamplingParams(0.7, 0.8, 6, 1, True, [151645, 151643], s["seed"])) for s in samples]
    [shown] = progress
    assert (shown.total, shown.label, shown.every_s) == (11, "[precompute vllm tokens]", 5.0)
    assert shown.updates == [(5 if shard < 3 else 1, sum(len(s["token_ids"]) for s in r["samples"])) for shard, r in records.items()]


@pytest.mark.parametrize("storage", ["fp32", "bf16"])
def test_the_states_phase_turns_answers_into_shards(vllm, tmp_path, stage_a_settings, progress, storage,
                                                   monkeypatch: pytest.MonkeyPatch):
    """One pooling engine; each sample's prompt + answer with its image; of its states the rows that sampled the
    answer, at the storage dtype, make the shard; the tokens files go."""
    config = phase_config(tmp_path, stage_a_settings, f'precompute.storage_dtype="{storage}"')
    pairs, folder = pairs_from_config(config, require_caption=False), folder_of(config)
    generate_tokens(config, pairs, [1, 2, 3])
    records = {s: json.loads(tokens_file(folder, s).read_text(encoding="utf-8")) for s in (1, 2, 3)}
    progress.clear()
    written, write_shard = [], vllm_stage_a.write_shard

    def recorded(folder: Path, shard: int, samples: list[Any], *args: Any, **kwargs: Any) -> None:
        written.append({s.features.dtype for s in samples})
        write_shard(folder, shard, samples, *args, **kwargs)

    monkeypatch.setattr(vllm_stage_a, "write_shard", recorded)
    compute_states(config, pairs, [1, 2, 3], hidden_size_of(config))
    dtype = torch.float32 if storage == "fp32" else torch.bfloat16
    assert written == [{dtype}] * 3  # each shard's rows kept at the storage dtype until written (bf16: half the memory)
    assert vllm.LLM.made[-1].arguments == {**engine_arguments(config), **POOLING}
    assert finished_shards(folder) == [1, 2, 3] and list((folder / TOKENS_DIR).iterdir()) == []
    for shard, record in records.items():
        assert_shard(folder, shard, record, config, pairs, dtype)
    [shown] = progress
    assert (shown.total, shown.label, shown.every_s) == (11, "[precompute vllm states]", 5.0)
    assert shown.updates == [(5 if s < 3 else 1, sum(len(x["token_ids"]) for x in r["samples"])) for s, r in records.items()]


def test_a_shard_of_unreadable_images_only(vllm, tmp_path, stage_a_settings, qwen_tokenizer):
    """Shards of one: shard 14 (an unreadable image) asks the engine nothing and ends up an empty shard of the VLM's
    width and the storage dtype with one skipped, between two shards with samples."""
    config = phase_config(tmp_path, stage_a_settings, "precompute.samples_per_shard=1", 'precompute.storage_dtype="bf16"')
    pairs, folder = pairs_from_config(config, require_caption=False), folder_of(config)
    generate_tokens(config, pairs, [14])
    assert vllm.LLM.generated == []
    assert json.loads(tokens_file(folder, 14).read_text(encoding="utf-8")) == {"samples": [], "skipped": 1}
    generate_tokens(config, pairs, [13, 15])
    records = {s: json.loads(tokens_file(folder, s).read_text(encoding="utf-8")) for s in (13, 14, 15)}
    compute_states(config, pairs, [13, 14, 15], hidden_size_of(config))
    for shard, record in records.items():
        assert_shard(folder, shard, record, config, pairs, torch.bfloat16)
    assert load_file(str(folder / f"{shard_stem(14)}.safetensors"))["features"].shape == (0, hidden_size_of(config))


def test_the_states_phase_reads_the_tokens_files_as_utf8(vllm, tmp_path, stage_a_settings, ascii_locale):
    """Whatever the locale (a bare cluster node's is ASCII): the tokens files hold the instructions as written."""
    config = phase_config(tmp_path, stage_a_settings, NON_ASCII)
    pairs, folder = pairs_from_config(config, require_caption=False), folder_of(config)
    generate_tokens(config, pairs, [0])
    compute_states(config, pairs, [0], hidden_size_of(config))
    records = json.loads((folder / f"{shard_stem(0)}.json").read_text(encoding="utf-8"))
    assert "Décris l'image." in {s["instruction"] for s in records["samples"]}


def test_the_images_are_read_by_the_configured_workers(tmp_path, stage_a_settings, monkeypatch: pytest.MonkeyPatch):
    """``data.num_workers`` DataLoader workers size the images of the given index batches, started at once."""
    config = phase_config(tmp_path, stage_a_settings, "data.num_workers=2")
    pairs, made = pairs_from_config(config, require_caption=False), []

    class Recorded(vllm_stage_a.DataLoader):
        def __init__(self, *args, **kwargs):
            made.append(kwargs["num_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(vllm_stage_a, "DataLoader", Recorded)
    batches = vllm_stage_a._loader(config, pairs, [[13, 14], [2]])
    assert made == [2] and batches._num_workers == 2  # the running iterator's worker count
    sized = [[(index, None if pair is None else pair.image.size) for index, pair in batch] for batch in batches]
    assert sized == [[(13, sized_image(config, pairs, 13).size), (14, None)], [(2, sized_image(config, pairs, 2).size)]]


def unreadable_now(config: Config, pairs: PairDataset) -> Path:
    """Shard 2 answered, its tokens file then claiming entry 14 (an unreadable image) was answered too."""
    generate_tokens(config, pairs, [2])
    path = tokens_file(folder_of(config), 2)
    record = json.loads(path.read_text(encoding="utf-8"))
    record["samples"].append({**record["samples"][0], "index": 14})
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_an_image_unreadable_in_the_states_phase_stops_it(vllm, config, pairs):
    path = unreadable_now(config, pairs)
    with pytest.raises(ThinkDiffError, match="^an image of shard 2 was readable in the tokens phase but is not now; check the data$"):
        compute_states(config, pairs, [2], hidden_size_of(config))
    assert path.is_file() and finished_shards(folder_of(config)) == []


@pytest.mark.parametrize("in_flight", [1, 2])
def test_the_pooling_engine_holds_at_most_in_flight_requests(vllm, tiny_vlm_folder: Path, qwen_tokenizer, in_flight):
    """Requests finish out of order (newest first); each prompt still gets its own answer rows, copies owning only
    their bytes (not the step's batch, which vLLM's outputs view), even at the engine's own dtype."""
    llm = vllm.LLM(model=str(tiny_vlm_folder), runner="pooling")
    hidden, ids = llm.hidden_size, prompt_ids(qwen_tokenizer, "Describe the image.")
    samples = [{"prompt_ids": ids, "token_ids": list(range(3000, 3003 + i))} for i in range(5)]
    images = [Image.new("RGB", (56 + 28 * i, 84)) for i in range(5)]
    prompts = ({"prompt_token_ids": s["prompt_ids"] + s["token_ids"], "multi_modal_data": {"image": image}}
               for s, image in zip(samples, images, strict=True))
    rows = answer_states(llm.llm_engine, prompts, [len(s["token_ids"]) for s in samples], torch.float32, in_flight=in_flight)
    assert max(llm.engine.in_flight) == in_flight and len(llm.engine.in_flight) == 5
    for row, sample, image in zip(rows, samples, images, strict=True):
        torch.testing.assert_close(row, expected_rows(sample, image, hidden), rtol=0, atol=0)
        assert row.untyped_storage().nbytes() == row.numel() * 4


def test_a_phases_process_leaves_the_launchers_group_and_reports_errors(monkeypatch: pytest.MonkeyPatch, capsys):
    """Without the launcher's torch.distributed variables; the phase's own error -> its message and exit code 1; any
    other error as it is."""
    for variable in LAUNCHER_VARIABLES:
        monkeypatch.setenv(variable, "1")
    seen = []

    def phase(config, *args):
        seen.append((config, args, [v for v in LAUNCHER_VARIABLES if v in vllm_stage_a.os.environ]))
        if config == "bad":
            raise ThinkDiffError("no room")
        if config == "bug":
            raise KeyError("x")

    monkeypatch.setitem(vllm_stage_a.PHASES, "states", phase)
    vllm_stage_a._phase_main("states", "good", [1, 2], 64)
    assert seen == [("good", ([1, 2], 64), [])] and capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as stop:
        vllm_stage_a._phase_main("states", "bad")
    assert stop.value.code == 1 and capsys.readouterr().err == "error: no room\n"
    with pytest.raises(KeyError):
        vllm_stage_a._phase_main("states", "bug")
    assert vllm_stage_a.PHASES["tokens"] is generate_tokens and vllm_stage_a.PHASES["states"] is phase


def test_the_phases_run_in_their_own_processes(vllm, tmp_path, stage_a_settings, qwen_tokenizer, capfd, monkeypatch):
    """precompute with the vLLM backend, shards of one: each phase in a spawned process (none of its engines here), the
    shards the two phases make (shard 14, of an unreadable image, empty at the VLM's width), the tokens folder gone.
    Each phase's line comes before its process's output, even where stdout is block-buffered (a batch job's log)."""
    config = phase_config(tmp_path, stage_a_settings, "precompute.samples_per_shard=1")
    pairs, folder = pairs_from_config(config, require_caption=False), folder_of(config)
    capfd.readouterr()
    with open(os.dup(1), "w", buffering=1 << 16, encoding="utf-8") as log:
        monkeypatch.setattr(sys, "stdout", log)
        assert precompute(config) == folder
    printed, shards = capfd.readouterr().out, ", ".join(map(str, range(16)))
    lines = [f"[precompute vllm] tokens phase: shards {shards}\n", "[precompute vllm tokens]: 16/16 samples",
             f"[precompute vllm] states phase: shards {shards}\n", "[precompute vllm states]: 16/16 samples"]
    assert all(line in printed for line in lines) and sorted(lines, key=printed.index) == lines
    assert vllm.LLM.made == [] and finished_shards(folder) == list(range(16)) and not (folder / TOKENS_DIR).exists()
    for shard in range(16):
        assert_shard(folder, shard, expected_record(vllm, config, pairs, qwen_tokenizer, shard), config, pairs)


def test_a_failed_phase_process_is_named_with_its_error_above(vllm, config, pairs, capfd):
    unreadable_now(config, pairs)
    capfd.readouterr()
    with pytest.raises(ThinkDiffError, match=r"^the vLLM states phase failed \(exit code 1\); its error is printed above. "
                                             "Rerun to continue: finished shards and answers are kept$"):
        vllm_stage_a._run_phase("states", config, pairs, [2], hidden_size_of(config))
    printed = capfd.readouterr()
    assert printed.out == "[precompute vllm] states phase: shards 2\n"
    assert printed.err.endswith("error: an image of shard 2 was readable in the tokens phase but is not now; check the data\n")


def test_prepare_picks_this_processs_gpus_and_process_0_writes_the_manifest(vllm, config, monkeypatch: pytest.MonkeyPatch):
    """Local process 1 of a node whose 4 GPUs it sees takes GPU 1, or GPUs 2, 3 with tensor parallel 2, or 6, 7 of the
    4-7 the launcher left it; one bound to its own two by the launcher keeps them; without a local rank, or where torch
    sees no GPU, nothing is picked. Only process 0 writes the manifest; every process gets the pairs and the VLM's
    width."""
    environ = vllm_stage_a.os.environ

    def picked(launch: Launch, visible: str | None = None) -> str | None:
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        prepare(config, launch)
        return environ.get("CUDA_VISIBLE_DEVICES")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert picked(Launch(1, 2, 1)) == "1" and read_manifest(folder_of(config)) is None
    pairs, hidden = prepare(config, Launch(1, 2, 1))
    assert len(pairs) == 16 and pairs[15] is not None and hidden == hidden_size_of(config) != 0
    config.precompute.vllm = {"tensor_parallel_size": 2}
    assert picked(Launch(1, 2, 1)) == "2,3" and picked(Launch(1, 2, 1), "4,5,6,7") == "6,7"
    assert picked(Launch(0, 2, 0), "0,1") == "0,1"
    assert read_manifest(folder_of(config)) == manifest_for(config, hidden, 16)
    assert picked(Launch(0, 1, None), "5") == "5"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert picked(Launch(0, 1, 0)) is None


def test_prepare_without_vllm_says_how_to_get_it(config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(vllm_stage_a.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ThinkDiffError, match="^the vLLM backend needs vLLM"):
        prepare(config, Launch())
    assert read_manifest(folder_of(config)) is None
