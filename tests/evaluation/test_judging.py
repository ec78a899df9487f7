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
from evaluation.cobsat.judge import judge, read_rows, read_summary, scores_file, summarize
from evaluation.cobsat.protocol import TASKS
from evaluation.cobsat.records import image_file, record_file
from evaluation.cobsat.report import markdown, tables
from evaluation.cobsat.samples import Sample
from tests.support.paths import REPO


def drawn(sample: Sample, seed: int) -> tuple[str, str]:
    """The (detail, object) the random generator drew for a sample: a uniform choice of each, from its seed."""
    rng = random.Random(seed + sample.index)
    task = TASKS[sample.task]
    return rng.choice(task.vocabulary("detail")), rng.choice(task.vocabulary("obj"))


def expected_row(sample: Sample, seed: int) -> dict:
    """The rule judge reads the drawn picture; the given text is the colour in task 1 (Color-I), the object in task 2."""
    detail, obj = drawn(sample, seed)
    task = TASKS[sample.task]
    answers = {"detail": task.vocabulary("detail").index(detail) + 1, "obj": task.vocabulary("obj").index(obj) + 1}
    truth = {"detail": task.vocabulary("detail").index(sample.gt["detail"]) + 1, "obj": task.vocabulary("obj").index(sample.gt["obj"]) + 1}
    checks = {part: answers[part] == truth[part] for part in ("detail", "obj")}
    textual, visual = ("detail", "obj") if sample.task == 1 else ("obj", "detail")
    return {"answer_detail": answers["detail"], "answer_obj": answers["obj"], "true_label_detail": truth["detail"],
            "true_label_obj": truth["obj"], "response_detail": str(answers["detail"]), "response_obj": str(answers["obj"]),
            "check_detail": checks["detail"], "check_obj": checks["obj"], "correct": checks["detail"] and checks["obj"],
            "check_textual": checks[textual], "check_visual": checks[visual], "exists": True}


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
            assert {key: rows[sample.index][key] for key in expected} == expected, sample.save_name
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
