"""The scoring plumbing without models: oracle and random generators, the rule judge, resume, shards and the report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.__main__ import main
from evaluation.cobsat.generate import fixed_batches, generate, load_backend, manifest, write_outputs
from evaluation.cobsat.judge import judge, read_rows, read_summary, scores_file
from evaluation.cobsat.prompt import INSTRUCTION
from evaluation.cobsat.protocol import TASKS
from evaluation.cobsat.records import Generated, image_file, record_file
from evaluation.cobsat.samples import Sample
from evaluation.cobsat.selftest import near_chance, selftest
from evaluation.cobsat.synthetic import PALETTE, SHAPES, RuleJudge, render, shape_of
from tests.support.ascii_locale import python_in_ascii_locale
from thinkdiff.errors import ThinkDiffError
from thinkdiff.images import REFERENCE_MAX_PIXELS, REFERENCE_MIN_PIXELS


def test_oracle_scores_one_and_random_scores_chance(tmp_path: Path, capsys):
    """200 samples per task and shot: the oracle is right every time, the random generator within 5 sigma of chance."""
    assert selftest(tmp_path, samples_per_task=200, shots=(2,))
    oracle = read_summary(tmp_path / "oracle" / "scores" / "rules" / "summary.csv")
    random = read_summary(tmp_path / "random" / "scores" / "rules" / "summary.csv")
    assert [(row["task"], row["correct"], row["check_detail"], row["check_obj"]) for row in oracle] == [(1, 1.0, 1.0, 1.0),
                                                                                                       (2, 1.0, 1.0, 1.0)]
    for row in random:
        assert row["correct"] < 0.04 and 0.04 < row["check_detail"] < 0.17 and 0.04 < row["check_obj"] < 0.17
    assert "self-test passed" in capsys.readouterr().out
    table = (tmp_path / "oracle" / "report" / "rules" / "cobsat.md").read_text()
    assert "| oracle generator (synthetic) | 1.000 | – | – | – | – | 1.000 | – | – | – | – | 1.000 |" in table


def test_near_chance_is_five_binomial_sigmas():
    assert near_chance(0.01, 0.01, 400) and near_chance(0.0, 0.01, 400) and not near_chance(0.06, 0.01, 400)
    assert near_chance(0.1 + 0.07, 0.1, 400) and not near_chance(0.1 + 0.08, 0.1, 400)
    assert near_chance(0.75, 0.5, 100) and near_chance(0.25, 0.5, 100)  # 5 sigma = 0.25 exactly: inside
    assert not near_chance(0.7501, 0.5, 100) and not near_chance(0.2499, 0.5, 100)


def test_run_generator_configures_one_synthetic_run(tmp_path: Path, monkeypatch, capsys):
    """Tasks 1-2 with the generator, the rule judge, batches of 50, under OUT/GENERATOR; it prints each report file and
    returns the judge's summary rows."""
    import evaluation.cobsat.selftest as selftest_module

    seen = []
    monkeypatch.setattr(selftest_module, "generate", lambda config: seen.append(("generate", config)))
    monkeypatch.setattr(selftest_module, "judge", lambda config: seen.append(("judge", config)) or tmp_path / "summary.csv")
    monkeypatch.setattr(selftest_module, "read_summary", lambda path: [{"read": path}])
    reports = [tmp_path / "a.md", tmp_path / "b.png"]
    monkeypatch.setattr(selftest_module, "report", lambda config: seen.append(("report", config)) or reports)
    rows = selftest_module.run_generator(tmp_path / "out", "random", tmp_path / "data sets", tmp_path / "list.json", [2, 4], 7)
    assert rows == [{"read": tmp_path / "summary.csv"}]
    assert [step for step, _ in seen] == ["generate", "judge", "report"] and len({id(config) for _, config in seen}) == 1
    config = seen[0][1]
    assert config.output_dir == tmp_path / "out" / "random"
    assert (config.run.tasks, config.run.shots, config.run.samples_per_task) == ([1, 2], [2, 4], 7)
    assert (config.data.prompt_list, config.dataset_root) == (str(tmp_path / "list.json"), tmp_path / "data sets")
    assert (config.generate.backend, config.generate.batch_size, config.judge.model) == ("random", 50, "rules")
    assert config.report.label == "random generator (synthetic)"
    assert capsys.readouterr().out == f"wrote {tmp_path / 'a.md'}\nwrote {tmp_path / 'b.png'}\n"


def row(shot: int, task: int, correct: float, detail: float, obj: float, samples: int = 1000) -> dict:
    return {"shot": shot, "task": task, "task_name": ["Color-I", "Color-II"][task - 1], "samples": str(samples),
            "correct": correct, "check_detail": detail, "check_obj": obj}


def scripted_selftest(tmp_path: Path, monkeypatch, rows: dict[str, list[dict]], **kwargs) -> tuple[bool, list[tuple]]:
    """selftest with the stand-in, the prompt list and each generator's run replaced: ``rows`` are the runs' summaries."""
    import evaluation.cobsat.selftest as selftest_module

    calls, dataset, prompts = [], tmp_path / "written datasets", tmp_path / "written list.json"
    monkeypatch.setattr(selftest_module, "write_standin", lambda root: calls.append(("standin", root)) or dataset)
    monkeypatch.setattr(selftest_module, "write_prompt_list", lambda path: calls.append(("prompts", path)) or prompts)

    def run_generator(out, generator, dataset_, prompt_list, shots, samples_per_task):
        calls.append((out, generator, dataset_ == dataset, prompt_list == prompts, shots, samples_per_task))
        return rows[generator]

    monkeypatch.setattr(selftest_module, "run_generator", run_generator)
    return selftest(tmp_path, **kwargs), calls


GOOD = {"oracle": [row(2, 1, 1.0, 1.0, 1.0), row(2, 2, 1.0, 1.0, 1.0)],
        "random": [row(2, 1, 0.009, 0.094, 0.107), row(2, 2, 0.004, 0.099, 0.1)]}


def test_selftest_writes_the_standin_and_runs_both_generators(tmp_path: Path, monkeypatch, capsys):
    ok, calls = scripted_selftest(tmp_path, monkeypatch, GOOD)
    assert ok is True
    assert calls == [("standin", tmp_path / "cobsat" / "datasets"), ("prompts", tmp_path / "cobsat" / "prompts_list_synthetic.json"),
                     (tmp_path, "oracle", True, True, [2, 4], 1000), (tmp_path, "random", True, True, [2, 4], 1000)]
    assert capsys.readouterr().out.splitlines() == [
        "oracle 2-shot Color-I   accuracy 1.000 (detail 1.000, object 1.000) ok",
        "oracle 2-shot Color-II  accuracy 1.000 (detail 1.000, object 1.000) ok",
        "random 2-shot Color-I   accuracy 0.009 (detail 0.094, object 0.107) ok",
        "random 2-shot Color-II  accuracy 0.004 (detail 0.099, object 0.100) ok",
        "self-test passed"]
    assert scripted_selftest(tmp_path, monkeypatch, GOOD, samples_per_task=5, shots=(4,))[1][2] == (tmp_path, "oracle", True, True,
                                                                                                     [4], 5)


@pytest.mark.parametrize("bad", ["oracle", "random"])
def test_selftest_fails_on_any_row_off_its_mark(tmp_path: Path, monkeypatch, capsys, bad: str):
    """An oracle below 1.0 on one question, or a random generator beyond 5 sigma of chance on one, fails that row and the
    self-test, whichever row it is."""
    for place in (0, 1):
        rows = {name: [dict(r) for r in GOOD[name]] for name in GOOD}
        rows[bad][place]["check_obj" if bad == "oracle" else "check_detail"] = 0.999 if bad == "oracle" else 0.2
        ok, _ = scripted_selftest(tmp_path, monkeypatch, rows)
        lines = capsys.readouterr().out.splitlines()
        assert ok is False and lines[-1] == "self-test FAILED"
        failed = [line for line in lines if line.endswith(" FAILED")]
        assert failed == [lines[(0 if bad == "oracle" else 2) + place], "self-test FAILED"], lines
    rows = {"oracle": GOOD["oracle"], "random": [row(2, 1, 0.009, 0.094, 0.107, samples=20), GOOD["random"][1]]}
    assert scripted_selftest(tmp_path, monkeypatch, rows)[0]  # 20 samples: 0.094 is within 5 sigma of 0.1, 0.009 of 0.01


@pytest.mark.parametrize("task", [1, 2])
def test_the_rule_judge_reads_every_colour_and_shape(tmp_path: Path, task: int):
    judge_ = RuleJudge()
    for colour in PALETTE:
        for obj in TASKS[task].vocabulary("obj"):
            path = tmp_path / f"{colour}_{obj}.jpg"
            render(TASKS[task], colour, obj).save(path, quality=95)
            assert judge_.look(path) == (colour, shape_of(obj))
    assert len(set(SHAPES)) == 10


def test_the_rule_judge_refuses_other_themes(tmp_path: Path):
    path = tmp_path / "x.jpg"
    render(TASKS[3], "park", "dog").save(path)
    with pytest.raises(ThinkDiffError, match="only answers the colour tasks"):
        RuleJudge().answer([(path, "What is the background (of the main object) in this image? ...")])


def test_generate_resumes_and_keeps_its_settings(eval_config):
    config = eval_config('generate.backend="random"', "generate.batch_size=3")
    images = generate(config)
    samples = config.samples()
    records = {s.save_name: json.loads(record_file(images, s).read_text()) for s in samples}
    assert len(records) == 8 and {r["seed"] - r["index"] for r in records.values()} == {42}
    assert (images / "shot_2" / "task_1" / "0_car_blue_brown_orange.txt").read_text() == ""
    # A sample whose record is gone is made again: with its whole batch (same seeds), but only it is written.
    lost, kept = samples[1], samples[0]
    record_file(images, lost).unlink()
    image_file(images, lost).unlink()
    kept_time = record_file(images, kept).stat().st_mtime_ns
    generate(config)
    assert json.loads(record_file(images, lost).read_text())["seed"] == records[lost.save_name]["seed"]
    assert record_file(images, kept).stat().st_mtime_ns == kept_time
    with pytest.raises(ThinkDiffError) as error:
        record_file(images, lost).unlink()
        generate(eval_config('generate.backend="random"', "generate.batch_size=3", "generate.steps=4"))
    assert str(error.value) == (f"{images} holds files made with other settings (steps differ): use another [run] output_dir or "
                                "restore the settings of images/manifest.json")


def test_batches_never_span_tasks_and_shards_split_them(eval_config):
    config = eval_config('generate.backend="oracle"', "generate.batch_size=3", "run.shots=[2, 4]")
    batches = fixed_batches(config.samples(), 3)
    assert [[(s.shot, s.task, s.index) for s in b] for b in batches[:2]] == [[(2, 1, 0), (2, 1, 1), (2, 1, 2)], [(2, 1, 3)]]
    assert len(batches) == 8 and all(len({(s.shot, s.task) for s in b}) == 1 for b in batches)
    images = config.output_dir / "images"

    def made() -> set[tuple[int, int, int]]:
        return {s.key for s in config.samples() if record_file(images, s).is_file()}

    shard = ['generate.backend="oracle"', "generate.batch_size=3", "run.shots=[2, 4]", "run.num_shards=2"]
    generate(eval_config(*shard, "run.shard_index=0"))
    assert made() == {s.key for b in batches[0::2] for s in b}
    generate(eval_config(*shard, "run.shard_index=1"))
    assert made() == {s.key for s in config.samples()}


def test_a_missing_image_is_wrong_and_judging_resumes(eval_config):
    config = eval_config('generate.backend="oracle"', 'judge.model="rules"')
    images = generate(config)
    samples = config.samples()
    image_file(images, samples[0]).unlink()
    summary = read_summary(judge(config))
    assert [(r["task"], r["samples"], r["missing_images"], r["correct"]) for r in summary] == [(1, "4", "1", 0.75), (2, "4", "0", 1.0)]
    rows = read_rows(scores_file(config.output_dir / "scores" / "rules", 2, 1))
    assert rows[0]["exists"] is False and rows[0]["answer_detail"] == -1 and rows[0]["correct"] is False
    assert rows[1]["response_detail"] == str(rows[1]["true_label_detail"]) and rows[1]["check_textual"] is True
    # A rerun judges nothing again; a row cut short by an interrupted run is judged again.
    path = scores_file(config.output_dir / "scores" / "rules", 2, 2)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    judge(config)
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()[-1:]] == [3]
    assert len(read_rows(path)) == 4


def test_the_cli_runs_every_step(tmp_path: Path, prompt_list: Path, standin: Path, capsys):
    (tmp_path / "run.toml").write_text(
        f'[run]\noutput_dir = "out"\ntasks = [1]\nshots = [2, 4]\nsamples_per_task = 3\n'
        f'[data]\nprompt_list = {json.dumps(str(prompt_list))}\ndataset_root = {json.dumps(str(standin))}\n'
        '[generate]\nbackend = "oracle"\nprogress_every_s = 0.0\n[judge]\nmodel = "rules"\n')
    config = ["--config", str(tmp_path / "run.toml")]
    for step in ("samples", "generate", "judge", "report"):
        assert main(["cobsat", step, *config]) == 0, capsys.readouterr().err
    assert len((tmp_path / "out" / "samples.jsonl").read_text().splitlines()) == 6
    assert Image.open(tmp_path / "out" / "report" / "rules" / "cobsat.png").size == (1200, 720)
    assert main(["cobsat", "judge", *config, "--set", 'judge.model="llava"']) == 1
    assert "set [judge] folder" in capsys.readouterr().err


class ScriptedBackend:
    """A backend whose outputs are made from the sample's index: a grey noise picture (mode "L"), an answer with an
    accent, index + 1 tokens; it keeps each call's (samples, seeds)."""

    def __init__(self) -> None:
        self.calls = []

    def generate(self, samples, seeds):
        self.calls.append(([s.key for s in samples], list(seeds)))
        return [Generated(noise(s.index), f"réponse {s.index}", s.index + 1, 0.1234567) for s in samples]


def noise(index: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(index).integers(0, 256, (16, 16), dtype=np.uint8), mode="L")


class Clock:
    """perf_counter for generate: each batch starts at 10 k and takes 1 s (a batch of three) or 0.6 s (of one)."""

    def __init__(self) -> None:
        self.values = iter([0.0, 1.0, 10.0, 10.6, 20.0, 21.0, 30.0, 30.6])

    def perf_counter(self) -> float:
        return next(self.values)


def test_generate_writes_what_the_backend_returns(eval_config, monkeypatch, capsys):
    """Batches of 3 consecutive entries per task, seeds 42 + index; per sample the JPEG (quality 95, RGB), the answer
    (UTF-8) and a record with the batch's seconds per sample; the folder's settings in images/manifest.json; progress."""
    import evaluation.cobsat.generate as generate_module

    backend, loads, hook = ScriptedBackend(), [], object()
    monkeypatch.setattr(generate_module, "load_backend", lambda *args: loads.append(args) or backend)
    monkeypatch.setattr(generate_module, "time", Clock())
    config = eval_config('generate.backend="oracle"', "generate.batch_size=3")
    capsys.readouterr()
    images = generate(config, hook)
    assert loads == [(config, "cpu", hook)]  # device "auto": this process's (the CPU)
    assert backend.calls == [([(2, 1, 0), (2, 1, 1), (2, 1, 2)], [42, 43, 44]), ([(2, 1, 3)], [45]),
                             ([(2, 2, 0), (2, 2, 1), (2, 2, 2)], [42, 43, 44]), ([(2, 2, 3)], [45])]
    for sample in config.samples():
        record = json.loads(record_file(images, sample).read_text())
        assert record == {"task": sample.task, "shot": 2, "index": sample.index, "save_name": sample.save_name,
                          "seed": 42 + sample.index, "backend": "oracle", "gt": sample.gt, "vlm_text": f"réponse {sample.index}",
                          "vlm_tokens": sample.index + 1, "seconds": 0.6 if sample.index == 3 else 0.3333, "vlm_seconds": 0.1235}
        assert (images / "shot_2" / f"task_{sample.task}" / f"{sample.save_name}.txt").read_bytes() == f"réponse {sample.index}".encode()
        reference = io.BytesIO()
        noise(sample.index).convert("RGB").save(reference, format="JPEG", quality=95)
        assert image_file(images, sample).read_bytes() == reference.getvalue()
    assert json.loads((images / "manifest.json").read_text()) == {
        "backend": "oracle", "seed": 42, "instruction": INSTRUCTION, "max_new_tokens": 128, "temperature": 0.6, "top_p": 0.9,
        "min_pixels": REFERENCE_MIN_PIXELS, "max_pixels": REFERENCE_MAX_PIXELS, "width": 512, "height": 512, "steps": 28,
        "guidance": 3.5}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[generate 1/1] 8 samples, 8 in this worker's batches, 8 to do (oracle)"
    assert [line.split(" samples,")[0] for line in lines[1:]] == [f"[generate 1/1]: {n}/8" for n in (3, 4, 7, 8)]
    assert all(float(line.split("samples/s, ")[1].split(" tokens/s")[0]) > 0 for line in lines[1:])  # the answers' tokens
    # Everything made: nothing loaded, nothing written again.
    generate(config, hook)
    assert len(loads) == 1 and capsys.readouterr().out == "[generate 1/1] 8 samples, 8 in this worker's batches, 0 to do (oracle)\n"
    # A device named in [diffusers] goes to the backend as it is.
    monkeypatch.setattr(generate_module, "time", Clock())
    other = eval_config('generate.backend="oracle"', "generate.batch_size=3", 'diffusers.device="cuda:1"',
                        f"run.output_dir={json.dumps(str(config.output_dir.parent / 'other'))}")
    generate(other)
    assert loads[1][1:] == ("cuda:1", None)


def test_the_manifest_holds_what_decides_the_images(eval_config):
    """Besides the fixed generation settings: the model files' names and dtypes and the VLM batch size (diffusers),
    the workflow's name and the model names (comfyui)."""
    fixed = {"instruction": INSTRUCTION, "max_new_tokens": 128, "temperature": 0.6, "top_p": 0.9, "min_pixels": REFERENCE_MIN_PIXELS,
             "max_pixels": REFERENCE_MAX_PIXELS, "width": 512, "height": 512, "steps": 28, "guidance": 3.5}
    diffusers = eval_config('generate.backend="diffusers"', 'diffusers.vlm="/m/Qwen2-VL-7B-Instruct"', "generate.batch_size=5",
                            'diffusers.aligner="/m/aligner.safetensors"', 'diffusers.flux="/m/FLUX.1-dev"', 'diffusers.flux_dtype="fp16"')
    assert manifest(diffusers) == {"backend": "diffusers", "seed": 42, **fixed, "vlm": "Qwen2-VL-7B-Instruct",
                                   "aligner": "aligner.safetensors", "flux": "FLUX.1-dev", "vlm_dtype": "bf16",
                                   "flux_dtype": "fp16", "batch_size": 5}
    comfyui = eval_config('generate.backend="comfyui"', 'comfyui.workflow="/w/mine.json"', 'comfyui.vlm="q.safetensors"',
                          'comfyui.aligner="a"', 'comfyui.unet="u"', 'comfyui.clip_l="c"', 'comfyui.t5="t"', 'comfyui.vae="v"',
                          "run.seed=7")
    assert manifest(comfyui) == {"backend": "comfyui", "seed": 7, **fixed, "workflow": "mine.json", "vlm": "q.safetensors",
                                 "aligner": "a", "unet": "u", "clip_l": "c", "t5": "t", "vae": "v"}
    assert manifest(eval_config('generate.backend="random"')) == {"backend": "random", "seed": 42, **fixed}


def test_each_backend_is_loaded_with_its_settings(eval_config, monkeypatch):
    import evaluation.cobsat.comfyui_backend as comfyui_backend
    import evaluation.cobsat.diffusers_backend as diffusers_backend

    monkeypatch.setattr(diffusers_backend, "DiffusersBackend", lambda *args: ("diffusers", *args))
    monkeypatch.setattr(comfyui_backend, "ComfyUIBackend", lambda *args: ("comfyui", *args))
    hook = object()
    config = eval_config('generate.backend="diffusers"')
    assert load_backend(config, "cuda:2", hook) == ("diffusers", config, "cuda:2")
    config = eval_config('generate.backend="comfyui"')
    assert load_backend(config, "cuda:2", hook) == ("comfyui", config, hook)
    assert [load_backend(eval_config(f'generate.backend="{name}"'), "cpu").oracle for name in ("oracle", "random")] == [True, False]


def test_answers_are_utf_8_whatever_the_locale(tmp_path: Path):
    """Under a C locale without UTF-8 mode (ASCII), a VLM answer with an accent is still written (in UTF-8)."""
    code = ("import sys; from pathlib import Path; from PIL import Image; from evaluation.cobsat.generate import write_outputs; "
            "from evaluation.cobsat.records import Generated; from evaluation.cobsat.samples import Sample; "
            "sample = Sample(1, 2, 0, (), (), {'detail': 'red', 'obj': 'car'}, 'x'); "
            "write_outputs(Path(sys.argv[1]), sample, 42, Generated(Image.new('RGB', (4, 4)), 'r' + chr(233) + 'ponse'), 0.5, 'oracle')")
    python_in_ascii_locale(code, str(tmp_path / "c"))
    assert (tmp_path / "c" / "shot_2" / "task_1" / "x.txt").read_bytes() == "réponse".encode()
    sample = Sample(1, 2, 0, (), (), {"detail": "red", "obj": "car"}, "x")  # in this process too, for mutation testing
    write_outputs(tmp_path / "here", sample, 42, Generated(Image.new("RGB", (4, 4)), "réponse"), 0.5, "oracle")
    assert (tmp_path / "here" / "shot_2" / "task_1" / "x.txt").read_bytes() == "réponse".encode()


@pytest.mark.parametrize("backend", ["diffusers", "comfyui"])
def test_the_model_backends_check_the_dataset_first(eval_config, tmp_path: Path, monkeypatch, backend: str):
    """The backends that read CoBSAT's demo images check the dataset root before loading anything; the drawing ones
    (oracle, random) do not read it."""
    import evaluation.cobsat.generate as generate_module

    loads = []
    monkeypatch.setattr(generate_module, "load_backend", lambda *args: loads.append(args) or ScriptedBackend())
    nowhere = f"data.dataset_root={json.dumps(str(tmp_path / 'nowhere'))}"
    with pytest.raises(ThinkDiffError, match=f"^dataset root not found: {tmp_path / 'nowhere'}"):
        generate(eval_config(f'generate.backend="{backend}"', nowhere))
    assert loads == []
    generate(eval_config(f'generate.backend="{backend}"'))  # the stand-in has every image
    generate(eval_config('generate.backend="oracle"', nowhere, f"run.output_dir={json.dumps(str(tmp_path / 'drawn'))}"))
    assert len(loads) == 2


def test_a_backend_must_return_one_result_per_sample(eval_config, monkeypatch):
    import evaluation.cobsat.generate as generate_module

    class OneShort(ScriptedBackend):
        def generate(self, samples, seeds):
            return super().generate(samples, seeds)[:-1]

    monkeypatch.setattr(generate_module, "load_backend", lambda *args: OneShort())
    with pytest.raises(ValueError, match="zip"):
        generate(eval_config('generate.backend="oracle"', "generate.batch_size=3"))
