"""``judge``: CoBSAT's two questions per image, the answer parsing and the metrics of ``evaluation_icl.py``.

Per sample: ``check_detail`` / ``check_obj`` (the parsed option equals the ground truth's number), ``correct`` (both:
the headline accuracy), ``check_textual`` / ``check_visual`` (the part given in the texts / the latent part), and the
CLIP ViT-B/32 metric when a CLIP folder is set. A missing image is wrong on every count. Rows go to
``OUTPUT_DIR/scores/JUDGE/shot_{N}/task_{T}.jsonl`` as they are judged (a rerun continues), and the accuracies of every
(shot, task) to ``summary.csv`` beside them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from thinkdiff.errors import ThinkDiffError
from thinkdiff.progress import Progress

from .config import EvalConfig
from .protocol import TASKS, parse_answer, question, true_label
from .records import image_file
from .samples import Sample, by_shot_and_task

PARTS = ("detail", "obj")
MISSING_CLIP = {"clip_similarity_detail": 0.0, "clip_similarity_obj": 0.0, "clip_similarity_overall": 0.0,
                "clip_check_detail": False, "clip_check_obj": False, "clip_correct": False}  # CoBSAT's row for a missing image
SUMMARY_METRICS = ("correct", "check_detail", "check_obj", "check_textual", "check_visual", "clip_correct",
                   "clip_similarity_overall")


class Judge(Protocol):
    name: str

    def answer(self, questions: Sequence[tuple[Path, str]]) -> list[str]:
        """The reply to each (image, question)."""


class ClipScorer(Protocol):
    def score(self, path: Path, sample: Sample) -> dict[str, Any]:
        """CoBSAT's ``clip_*`` values of one image."""


def score_row(sample: Sample, image: Path, replies: dict[str, str] | None, clip: dict[str, Any] | None) -> dict[str, Any]:
    """One sample's judgement; ``replies`` is None for a missing image."""
    task = TASKS[sample.task]
    row: dict[str, Any] = {"index": sample.index, "save_name": sample.save_name, "image": image.name, "exists": replies is not None}
    for part in PARTS:
        label = true_label(task, part, sample.gt[part])
        answer = parse_answer(replies[part]) if replies else -1
        row.update({f"gt_{part}": sample.gt[part], f"true_label_{part}": label, f"question_{part}": question(task, part),
                    f"response_{part}": replies[part] if replies else None, f"answer_{part}": answer,
                    f"check_{part}": answer == label})
    x_part = "obj" if task.x_is_object else "detail"
    row["correct"] = row["check_detail"] and row["check_obj"]
    row["check_textual"] = row[f"check_{x_part}"]
    row["check_visual"] = row[f"check_{'detail' if x_part == 'obj' else 'obj'}"]
    if clip is not None:
        row.update(clip)
    return row


def scores_file(scores_dir: Path, shot: int, task: int) -> Path:
    return scores_dir / f"shot_{shot}" / f"task_{task}.jsonl"


def read_rows(path: Path) -> dict[int, dict[str, Any]]:
    """Judged rows by prompt-list index; a line cut short by an interrupted run is dropped."""
    rows = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["index"]] = row
    return rows


def drop_cut_line(path: Path) -> None:
    """Remove a last line an interrupted run left without its newline, so appended rows start on a line of their own."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text and not text.endswith("\n"):
        path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")


def unjudged(samples: Sequence[Sample], scores_dir: Path) -> list[tuple[tuple[int, int], list[Sample]]]:
    """The samples without a row yet, by (shot, task)."""
    out = []
    for key, group in by_shot_and_task(samples):
        done = read_rows(scores_file(scores_dir, *key))
        out.append((key, [s for s in group if s.index not in done]))
    return out


def judge_samples(samples: Sequence[Sample], images_dir: Path, scores_dir: Path, judge: Judge,
                  clip: ClipScorer | None = None, batch_size: int = 8, progress_every_s: float = 30.0) -> None:
    """Judge every sample without a row yet; ``batch_size`` questions go to the judge at a time."""
    todo = unjudged(samples, scores_dir)
    progress = Progress(sum(len(group) for _, group in todo), f"[judge {judge.name}]", progress_every_s)
    per_call = max(1, batch_size // len(PARTS))
    for (shot, task), group in todo:
        path = scores_file(scores_dir, shot, task)
        path.parent.mkdir(parents=True, exist_ok=True)
        drop_cut_line(path)
        for start in range(0, len(group), per_call):
            chunk = [(s, image_file(images_dir, s)) for s in group[start:start + per_call]]
            present = [(s, image) for s, image in chunk if image.is_file()]
            replies = iter(judge.answer([(image, question(TASKS[task], part)) for s, image in present for part in PARTS]))
            answered = {s.index: {part: next(replies) for part in PARTS} for s, _ in present}
            with path.open("a", encoding="utf-8") as f:
                for s, image in chunk:
                    clip_values = None if clip is None else clip.score(image, s) if s.index in answered else MISSING_CLIP
                    f.write(json.dumps(score_row(s, image, answered.get(s.index), clip_values)) + "\n")
            progress.update(len(chunk))


def summarize(samples: Sequence[Sample], scores_dir: Path) -> list[dict[str, Any]]:
    """Accuracy of every (shot, task) over its samples (an unjudged sample counts as wrong, as a missing image does)."""
    out = []
    for (shot, task), group in by_shot_and_task(samples):
        rows = read_rows(scores_file(scores_dir, shot, task))
        mine = [rows.get(s.index, {}) for s in group]
        summary = {"shot": shot, "task": task, "task_name": TASKS[task].name, "samples": len(group),
                   "judged": sum(bool(r) for r in mine), "missing_images": sum(r.get("exists") is False for r in mine)}
        for metric in SUMMARY_METRICS:
            if any(metric in r for r in mine):
                summary[metric] = round(sum(float(r.get(metric, 0)) for r in mine) / len(group), 4)
        out.append(summary)
    return out


def write_summary(rows: list[dict[str, Any]], path: Path) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_summary(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ThinkDiffError(f"no judge summary at {path}: run `python -m evaluation cobsat judge` first")
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: (float(v) if k in SUMMARY_METRICS else int(v) if k in ("shot", "task") else v) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]


def judge_name(config: EvalConfig) -> str:
    """The scores folder's name: ``rules``, or the judge model's folder name."""
    if config.judge.model == "rules":
        return "rules"
    if not config.judge.folder:
        raise ThinkDiffError(f"set [judge] folder to the {config.judge.model} model folder (e.g. llava-hf/llava-1.5-13b-hf)")
    return config.path(config.judge.folder).name


def load_judge(config: EvalConfig) -> tuple[Judge, ClipScorer | None]:
    settings = config.judge
    if settings.model == "rules":
        from .synthetic import RuleJudge

        judge: Judge = RuleJudge()
    else:
        from .judges import load_model_judge

        judge = load_model_judge(settings.model, config.path(settings.folder), settings.dtype, settings.device, settings.max_new_tokens)
    if not settings.clip:
        return judge, None
    from .judges import ClipMetric

    return judge, ClipMetric(config.path(settings.clip), settings.device)


def judge(config: EvalConfig) -> Path:
    """Judge the run's images with the configured judge; returns the summary file."""
    samples = config.samples()
    scores_dir = config.output_dir / "scores" / judge_name(config)
    if any(group for _, group in unjudged(samples, scores_dir)):
        model, clip = load_judge(config)
        judge_samples(samples, config.output_dir / "images", scores_dir, model, clip, config.judge.batch_size,
                      config.generate.progress_every_s)
    scores_dir.mkdir(parents=True, exist_ok=True)
    return write_summary(summarize(samples, scores_dir), scores_dir / "summary.csv")
