"""Judging a run that is partly wrong, as real runs are: every question's values against what the random generator
drew, an unjudged sample counted wrong, and a run split over shards and processes judged as one process's run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.cobsat.config import load_config
from evaluation.cobsat.generate import generate
from evaluation.cobsat.judge import (
    judge,
    judge_name,
    judge_samples,
    load_judge,
    read_rows,
    read_summary,
    scores_file,
    summarize,
    write_summary,
)
from evaluation.cobsat.protocol import TASKS, question
from evaluation.cobsat.records import image_file, record_file
from evaluation.cobsat.report import markdown, tables
from evaluation.cobsat.samples import Sample, build_samples, write_samples
from evaluation.cobsat.synthetic import RuleJudge
from tests.support.paths import REPO
from thinkdiff.errors import ThinkDiffError


def drawn(sample: Sample, seed: int) -> tuple[str, str]:
    """The (detail, object) the random generator drew for a sample: a uniform choice of each, from its seed."""
    rng = random.Random(seed + sample.index)
    task = TASKS[sample.task]
    return rng.choice(task.vocabulary("detail")), rng.choice(task.vocabulary("obj"))


def expected_row(sample: Sample, seed: int | None) -> dict:
    """The rule judge reads the drawn picture; the given text is the colour in task 1 (Color-I), the object in task 2.
    ``seed`` None: the image is missing, wrong on every count (no reply, answer -1)."""
    task = TASKS[sample.task]
    truth = {"detail": task.vocabulary("detail").index(sample.gt["detail"]) + 1, "obj": task.vocabulary("obj").index(sample.gt["obj"]) + 1}
    if seed is None:
        answers, replies = {"detail": -1, "obj": -1}, {"detail": None, "obj": None}
    else:
        detail, obj = drawn(sample, seed)
        answers = {"detail": task.vocabulary("detail").index(detail) + 1, "obj": task.vocabulary("obj").index(obj) + 1}
        replies = {part: str(answer) for part, answer in answers.items()}
    checks = {part: answers[part] == truth[part] for part in ("detail", "obj")}
    textual, visual = ("detail", "obj") if sample.task == 1 else ("obj", "detail")
    return {"index": sample.index, "save_name": sample.save_name, "image": f"{sample.save_name}.jpg", "exists": seed is not None,
            "gt_detail": sample.gt["detail"], "gt_obj": sample.gt["obj"],
            "question_detail": question(task, "detail"), "question_obj": question(task, "obj"),
            "answer_detail": answers["detail"], "answer_obj": answers["obj"], "true_label_detail": truth["detail"],
            "true_label_obj": truth["obj"], "response_detail": replies["detail"], "response_obj": replies["obj"],
            "check_detail": checks["detail"], "check_obj": checks["obj"], "correct": checks["detail"] and checks["obj"],
            "check_textual": checks[textual], "check_visual": checks[visual]}


@pytest.fixture
def random_run(eval_config):
    """The random generator on tasks 1-2 (2-shot, 40 samples each), judged by the rule judge."""
    config = eval_config('generate.backend="random"', 'judge.model="rules"', "run.samples_per_task=40", "generate.batch_size=8")
    generate(config)
    judge(config)
    return config


def test_every_question_is_judged_as_the_picture_shows(random_run):
    """Rows against the pictures drawn: right and wrong answers of each part, per question; the summary is their mean."""
    config, seed = random_run, random_run.run.seed
    scores = config.output_dir / "scores" / "rules"
    seen = {key: set() for key in ("check_detail", "check_obj", "correct")}
    for task in (1, 2):
        rows = read_rows(scores_file(scores, 2, task))
        samples = [s for s in config.samples() if s.task == task]
        assert sorted(rows) == [s.index for s in samples]
        for sample in samples:
            expected = expected_row(sample, seed)
            assert rows[sample.index] == expected, sample.save_name
            for key in seen:
                seen[key].add(expected[key])
        summary = next(row for row in read_summary(scores / "summary.csv") if row["task"] == task)
        for metric in ("correct", "check_detail", "check_obj", "check_textual", "check_visual"):
            assert summary[metric] == round(sum(expected_row(s, seed)[metric] for s in samples) / 40, 4), metric
    assert seen == {key: {True, False} for key in seen}  # both outcomes occur for every check


def test_an_unjudged_sample_counts_as_wrong(random_run):
    """Rows lost (an interrupted judge): their samples count as wrong in every accuracy, and not as missing images."""
    config, seed = random_run, random_run.run.seed
    samples = [s for s in config.samples() if s.task == 2]
    right = [s for s in samples if expected_row(s, seed)["check_obj"]]
    path = scores_file(config.output_dir / "scores" / "rules", 2, 2)
    lost = {right[0].index, samples[-1].index}
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if json.loads(line)["index"] not in lost))
    summary = next(row for row in summarize(config.samples(), config.output_dir / "scores" / "rules") if row["task"] == 2)
    kept = [s for s in samples if s.index not in lost]
    assert (summary["samples"], summary["judged"], summary["missing_images"]) == (40, 38, 0)
    for metric in ("correct", "check_obj", "check_detail"):
        assert summary[metric] == round(sum(expected_row(s, seed)[metric] for s in kept) / 40, 4), metric
    assert summary["check_obj"] < round(len(right) / 40, 4)
    text = markdown(tables([summary], "random"), "rules", [summary])
    assert "40 samples over 1 task(s), 0 image(s) missing, 2 not judged (counted wrong)." in text


def test_an_interrupted_judge_resumes_where_it_stopped(random_run, capsys):
    """A row cut short and rows never written (an interrupted judge): a rerun judges exactly those samples again and
    appends their rows after the kept ones, so every sample has one row, as in the uninterrupted run."""
    config = random_run
    scores = config.output_dir / "scores" / "rules"
    paths = [scores_file(scores, 2, task) for task in (1, 2)]
    before = [read_rows(path) for path in paths]
    lines = paths[0].read_text().splitlines()
    paths[0].write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:40])  # the last row lost, the one before cut short
    lines = paths[1].read_text().splitlines()
    paths[1].write_text("".join(line + "\n" for line in lines[:-1]))  # the last row lost
    capsys.readouterr()
    judge(config)
    for path, rows in zip(paths, before, strict=True):
        assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == list(range(40))
        assert read_rows(path) == rows
    # Three samples judged again, 8 questions a call (4 samples): one call per task, a progress line after each.
    assert [line.split(" samples,")[0] for line in capsys.readouterr().out.splitlines()] == ["[judge rules]: 2/3", "[judge rules]: 3/3"]


def test_rows_after_a_damaged_line_are_kept(tmp_path: Path):
    path = tmp_path / "task_1.jsonl"
    path.write_text('{"index": 0, "correct": true}\n{"index": 1, "corr\n{"index": 2, "correct": false}\n')
    assert read_rows(path) == {0: {"index": 0, "correct": True}, 2: {"index": 2, "correct": False}}
    assert read_rows(tmp_path / "none.jsonl") == {}


class RecordingJudge:
    """The rule judge, keeping the questions of each call."""

    name = "recorder"

    def __init__(self) -> None:
        self.rules, self.calls = RuleJudge(), []

    def answer(self, questions):
        self.calls.append(list(questions))
        return self.rules.answer(questions)


class NumberedClip:
    """A CLIP stand-in: values made from the sample's index, and the images it was asked about."""

    def __init__(self) -> None:
        self.scored = []

    def score(self, path: Path, sample: Sample) -> dict:
        self.scored.append((path, sample.index))
        return {"clip_similarity_detail": 20.0 + sample.index, "clip_similarity_obj": 21.0, "clip_similarity_overall": 22.5,
                "clip_check_detail": True, "clip_check_obj": sample.index != 2, "clip_correct": sample.index != 2}


def test_questions_go_in_batches_and_a_missing_image_gets_cobsats_row(eval_config, tmp_path: Path, capsys):
    """batch_size questions a call (both questions of batch_size // 2 samples, at least one), only for images that
    exist; a missing image is wrong on every count, with CoBSAT's zero CLIP values, and is not shown to CLIP."""
    config = eval_config('generate.backend="random"', "run.samples_per_task=3")
    images = generate(config)
    samples = config.samples()
    by_key = {(s.task, s.index): s for s in samples}
    image_file(images, by_key[1, 1]).unlink()

    def asked(task: int, *indices: int) -> list[tuple[Path, str]]:
        return [(image_file(images, by_key[task, i]), question(TASKS[task], part)) for i in indices for part in ("detail", "obj")]

    judge_, clip = RecordingJudge(), NumberedClip()
    capsys.readouterr()
    judge_samples(samples, images, tmp_path / "scores", judge_, clip, batch_size=5, progress_every_s=0.0)
    assert judge_.calls == [asked(1, 0), asked(1, 2), asked(2, 0, 1), asked(2, 2)]  # 2 samples a call, sample (1, 1) missing
    assert clip.scored == [(image_file(images, by_key[key]), key[1]) for key in ((1, 0), (1, 2), (2, 0), (2, 1), (2, 2))]
    assert [line.split(" samples,")[0] for line in capsys.readouterr().out.splitlines()] == [
        "[judge recorder]: 2/6", "[judge recorder]: 3/6", "[judge recorder]: 5/6", "[judge recorder]: 6/6"]
    seed = config.run.seed
    for task in (1, 2):
        rows = read_rows(scores_file(tmp_path / "scores", 2, task))
        assert sorted(rows) == [0, 1, 2]
        for index, row in rows.items():
            sample = by_key[task, index]
            if (task, index) == (1, 1):
                clip_values = {"clip_similarity_detail": 0.0, "clip_similarity_obj": 0.0, "clip_similarity_overall": 0.0,
                               "clip_check_detail": False, "clip_check_obj": False, "clip_correct": False}
                assert row == {**expected_row(sample, None), **clip_values}
            else:
                assert row == {**expected_row(sample, seed), **NumberedClip().score(image_file(images, sample), sample)}

    judge_ = RecordingJudge()
    judge_samples(samples, images, tmp_path / "one_by_one", judge_, batch_size=1)  # fewer than two questions: one sample
    assert [call for call in judge_.calls if call] == [asked(1, 0), asked(1, 2), asked(2, 0), asked(2, 1), asked(2, 2)]
    assert "clip_correct" not in read_rows(scores_file(tmp_path / "one_by_one", 2, 2))[0]


def test_progress_is_printed_every_30_seconds_by_default(eval_config, tmp_path: Path, monkeypatch, capsys):
    """judge_samples' default progress interval: a line 30 s after the last one (and at the end)."""
    import thinkdiff.progress

    class Clock:
        values = iter([0.0, 29.9, 30.0])

        @classmethod
        def monotonic(cls) -> float:
            return next(cls.values)

    config = eval_config('generate.backend="oracle"', "run.samples_per_task=2", "run.tasks=[1]")
    images = generate(config)
    monkeypatch.setattr(thinkdiff.progress, "time", Clock)
    capsys.readouterr()
    judge_samples(config.samples(), images, tmp_path / "scores", RuleJudge(), batch_size=1)
    assert [line.split(" samples,")[0] for line in capsys.readouterr().out.splitlines()] == ["[judge rules]: 2/2"]
    Clock.values = iter([0.0, 30.0, 30.1])
    judge_samples(config.samples(), images, tmp_path / "again", RuleJudge(), batch_size=1)
    assert [line.split(" samples,")[0] for line in capsys.readouterr().out.splitlines()] == ["[judge rules]: 1/2", "[judge rules]: 2/2"]


def test_a_selection_without_samples_gives_an_empty_summary(eval_config, tmp_path: Path, prompt_list: Path):
    """A samples file without the configured tasks: nothing to judge, and an empty summary rather than an error."""
    samples = write_samples(build_samples(prompt_list, [3], [2], count=2), tmp_path / "task3.jsonl")
    config = eval_config(f"data.samples={json.dumps(str(samples))}", 'judge.model="rules"')
    assert config.samples() == []
    summary = judge(config)
    assert summary == config.output_dir / "scores" / "rules" / "summary.csv" and read_summary(summary) == []

def test_the_summary_is_each_tasks_mean_over_its_samples(tmp_path: Path):
    """Hand-made rows: three samples a task; an unjudged sample and a missing image count as wrong; four decimals; the
    CLIP columns only where CLIP was measured. The summary file reads back as written."""
    samples = [Sample(task, 2, index, (), (), {"detail": "red", "obj": "car"}, str(index)) for task in (2, 1) for index in range(3)]
    scores = tmp_path / "scores"
    flags = ("correct", "check_detail", "check_obj", "check_textual", "check_visual")
    rows = {1: [{"index": 0, "exists": True, **dict.fromkeys(flags, True), "clip_correct": True, "clip_similarity_overall": 20.0},
                {"index": 1, "exists": False, **dict.fromkeys(flags, False), "clip_correct": False, "clip_similarity_overall": 0.0}],
            2: [{"index": i, "exists": True, "correct": i != 2, "check_detail": True, "check_obj": i != 2, "check_textual": i != 2,
                 "check_visual": True} for i in range(3)]}
    for task, task_rows in rows.items():
        path = scores_file(scores, 2, task)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in task_rows))
    summary = summarize(samples, scores)
    assert summary == [
        {"shot": 2, "task": 1, "task_name": "Color-I", "samples": 3, "judged": 2, "missing_images": 1, "correct": 0.3333,
         "check_detail": 0.3333, "check_obj": 0.3333, "check_textual": 0.3333, "check_visual": 0.3333, "clip_correct": 0.3333,
         "clip_similarity_overall": 6.6667},
        {"shot": 2, "task": 2, "task_name": "Color-II", "samples": 3, "judged": 3, "missing_images": 0, "correct": 0.6667,
         "check_detail": 1.0, "check_obj": 0.6667, "check_textual": 0.6667, "check_visual": 1.0}]
    path = write_summary(summary, tmp_path / "summary.csv")
    assert path.read_text().splitlines()[0] == ("shot,task,task_name,samples,judged,missing_images,correct,check_detail,"
                                                "check_obj,check_textual,check_visual,clip_correct,clip_similarity_overall")
    read = read_summary(path)
    assert read == [{**row, **{key: str(row[key]) for key in ("samples", "judged", "missing_images")}} for row in summary]
    assert [type(read[0][key]) for key in ("shot", "task", "correct")] == [int, int, float]
    with pytest.raises(ThinkDiffError, match="no judge summary at .*: run `python -m evaluation cobsat judge` first"):
        read_summary(tmp_path / "missing.csv")


def test_the_configured_judge_is_loaded_with_its_settings(eval_config, tmp_path: Path, monkeypatch):
    """The model judge and the CLIP metric get the [judge] folder, dtype, device and token budget; the scores folder is
    named after the judge model's folder."""
    import evaluation.cobsat.judges as judges

    monkeypatch.setattr(judges, "load_model_judge", lambda *args: ("model judge", *args))
    monkeypatch.setattr(judges, "ClipMetric", lambda *args: ("clip", *args))
    config = eval_config('judge.model="qwen2vl"', f"judge.folder={json.dumps(str(tmp_path / 'models' / 'Qwen2-VL-7B'))}",
                         'judge.dtype="bf16"', 'judge.device="cuda:1"', "judge.max_new_tokens=7",
                         f"judge.clip={json.dumps(str(tmp_path / 'clip'))}")
    assert load_judge(config) == (("model judge", "qwen2vl", tmp_path / "models" / "Qwen2-VL-7B", "bf16", "cuda:1", 7),
                                  ("clip", tmp_path / "clip", "cuda:1"))
    assert judge_name(config) == "Qwen2-VL-7B"
    rules, clip = load_judge(eval_config('judge.model="rules"'))
    assert isinstance(rules, RuleJudge) and clip is None and judge_name(eval_config('judge.model="rules"')) == "rules"
    with pytest.raises(ThinkDiffError, match=r"set \[judge\] folder to the llava model folder \(e.g. llava-hf/llava-1.5-13b-hf\)"):
        judge_name(eval_config('judge.model="llava"'))


def test_shards_times_processes_give_the_one_process_run(tmp_path: Path, prompt_list: Path, standin: Path):
    """Two independent shards of two processes each (torchrun on the CPU) fill one folder with the images and records,
    and so the judged scores, of one process doing the whole run."""
    settings = ["run.tasks=[1, 2]", "run.shots=[2]", "run.samples_per_task=6", f"data.prompt_list={json.dumps(str(prompt_list))}",
                f"data.dataset_root={json.dumps(str(standin))}", 'generate.backend="random"', "generate.batch_size=2",
                'judge.model="rules"', "generate.progress_every_s=0.0"]
    split, one = (load_config(None, [f"run.output_dir={json.dumps(str(tmp_path / name))}", *settings]) for name in ("split", "one"))
    for shard in (0, 1):
        overrides = [f"run.output_dir={json.dumps(str(split.output_dir))}", *settings, "run.num_shards=2", f"run.shard_index={shard}"]
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                                 "evaluation", "cobsat", "generate", *[a for s in overrides for a in ("--set", s)]],
                                cwd=REPO, env={**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"},
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for process in (0, 1):  # 6 batches of 2 for 4 workers: the first two take two batches, the others one
            worker = 2 * shard + process
            assert f"[generate {worker + 1}/4] 12 samples, {4 if worker < 2 else 2} in this worker's batches, " in result.stdout
    generate(one)
    for sample in one.samples():
        ours, theirs = ({k: v for k, v in json.loads(record_file(run.output_dir / "images", sample).read_text()).items()
                         if "seconds" not in k} for run in (split, one))
        assert ours == theirs and ours["seed"] == 42 + sample.index
        assert image_file(split.output_dir / "images", sample).read_bytes() == image_file(one.output_dir / "images", sample).read_bytes()
    summaries = [judge(run).read_text() for run in (split, one)]
    assert summaries[0] == summaries[1]
    for task in (1, 2):
        rows = [read_rows(scores_file(run.output_dir / "scores" / "rules", 2, task)) for run in (split, one)]
        assert rows[0] == rows[1] and len(rows[0]) == 6
