"""N-shot samples from CoBSAT's prompt list (``load_datasets/prompts_list_default.json``), as ``load_dataset.py`` builds them.

Entry ``i`` of the list is ``{"x_list": [...], "theta_list": [...]}``, index permutations of the ten vocabulary items.
For task T and N shots: theta = theta_items[theta_list[N + 1]]; x_j = x_items[x_list[j]] for j = 0..N (N demos and the
query); the texts are ``"{word(x_j)}: "``, the images are the N demos' (x_j, theta) pictures and the ground truth is
(x_N, theta). Like CoBSAT, the ground truth and the output name hold the display word of x and the raw theta item.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from thinkdiff.errors import ThinkDiffError

from .protocol import PROMPTS_PER_TASK, SHOTS, TASKS, VOCABULARIES, image_path, word

COBSAT_REPO = "https://github.com/UW-Madison-Lee-Lab/CoBSAT"
VOCABULARY_SIZE = len(VOCABULARIES["color"])


@dataclass(frozen=True)
class Sample:
    task: int
    shot: int
    index: int  # entry of the prompt list
    text_inputs: tuple[str, ...]  # N + 1 texts, the query last
    image_inputs: tuple[str, ...]  # N demo images, relative to the dataset root
    gt: dict[str, str]  # {"detail", "obj"}
    save_name: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "text_inputs": list(self.text_inputs), "image_inputs": list(self.image_inputs)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        return cls(data["task"], data["shot"], data["index"], tuple(data["text_inputs"]), tuple(data["image_inputs"]),
                   dict(data["gt"]), data["save_name"])

    @property
    def key(self) -> tuple[int, int, int]:
        return self.shot, self.task, self.index


def parse_numbers(text: str) -> list[int]:
    """``"1-10"``, ``"2,4"`` or ``"1-3,7"`` as a sorted list of distinct integers."""
    numbers: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            numbers.update(range(int(low), int(high or low) + 1))
    except ValueError as e:
        raise ThinkDiffError(f"{text!r} is not a list of numbers such as 1-10 or 2,4") from e
    return sorted(numbers)


def check_selection(tasks: Sequence[int], shots: Sequence[int], count: int) -> None:
    if not tasks or not set(tasks) <= set(TASKS):
        raise ThinkDiffError(f"tasks must be among 1-10, got {list(tasks)}")
    if not shots or not set(shots) <= set(SHOTS):
        raise ThinkDiffError(f"shots must be among {', '.join(map(str, SHOTS))}, got {list(shots)}")
    if not 1 <= count <= PROMPTS_PER_TASK:
        raise ThinkDiffError(f"samples_per_task must be 1-{PROMPTS_PER_TASK}, got {count}")


def _damaged(path: Path, what: str) -> ThinkDiffError:
    return ThinkDiffError(f"{path} is not a CoBSAT prompt list: {what}. Use load_datasets/prompts_list_default.json from "
                          f"{COBSAT_REPO} unchanged (1000 entries of x_list/theta_list permutations of 0-9).")


def read_prompt_list(path: Path) -> list[dict[str, list[int]]]:
    """The prompt list's entries, checked: each has ``x_list`` and ``theta_list``, index lists into a 10-item vocabulary."""
    if not path.is_file():
        raise ThinkDiffError(f"prompt list not found: {path}. Take load_datasets/prompts_list_default.json from a clone of "
                             f"{COBSAT_REPO} (it is not downloaded at run time).")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _damaged(path, f"not valid JSON ({e})") from e
    if not isinstance(entries, list) or not entries:
        raise _damaged(path, "not a non-empty JSON list")
    for number, entry in enumerate(entries):
        lists = [entry.get(key) if isinstance(entry, dict) else None for key in ("x_list", "theta_list")]
        if not all(isinstance(v, list) and v and all(type(i) is int and 0 <= i < VOCABULARY_SIZE for i in v) for v in lists):
            raise _damaged(path, f"entry {number} is {json.dumps(entry)[:120]}")
    return entries


def build_sample(task_id: int, shot: int, index: int, entry: dict[str, list[int]]) -> Sample:
    task = TASKS[task_id]
    if len(entry["x_list"]) < shot + 1 or len(entry["theta_list"]) < shot + 2:
        raise ThinkDiffError(f"prompt list entry {index} is too short for {shot} shots (x_list needs {shot + 1} indices, "
                             f"theta_list {shot + 2})")
    x_items, theta_items = VOCABULARIES[task.x_space], VOCABULARIES[task.theta_space]
    theta = theta_items[entry["theta_list"][shot + 1]]
    xs = [x_items[i] for i in entry["x_list"][: shot + 1]]
    words = [word(x) for x in xs]
    gt = {"detail": theta, "obj": words[-1]} if task.x_is_object else {"detail": words[-1], "obj": theta}
    return Sample(task_id, shot, index, tuple(f"{w}: " for w in words), tuple(image_path(task, x, theta) for x in xs[:-1]),
                  gt, f"{index}_{theta}_{'_'.join(words)}")


def build_samples(prompt_list: Path, tasks: Sequence[int], shots: Sequence[int],
                  count: int = PROMPTS_PER_TASK) -> list[Sample]:
    """Samples of every (shot, task), the first ``count`` prompt-list entries each, ordered by shot, task, index."""
    check_selection(tasks, shots, count)
    entries = read_prompt_list(prompt_list)
    if len(entries) < count:
        raise ThinkDiffError(f"{prompt_list} has {len(entries)} entries, fewer than samples_per_task = {count}")
    return [build_sample(task, shot, index, entries[index]) for shot in shots for task in tasks for index in range(count)]


def by_shot_and_task(samples: Iterable[Sample]) -> list[tuple[tuple[int, int], list[Sample]]]:
    """Samples grouped by (shot, task), each group in prompt-list order."""
    ordered = sorted(samples, key=lambda s: s.key)
    return [(key, list(group)) for key, group in groupby(ordered, key=lambda s: (s.shot, s.task))]


def write_samples(samples: Iterable[Sample], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample.to_json()) + "\n")
    return path


def read_samples(path: Path) -> list[Sample]:
    if not path.is_file():
        raise ThinkDiffError(f"samples file not found: {path}; write it with `python -m evaluation cobsat samples`")
    try:
        return [Sample.from_json(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ThinkDiffError(f"{path} is not a samples file written by `python -m evaluation cobsat samples` ({e})") from e


def check_dataset_root(root: Path, samples: Iterable[Sample]) -> None:
    """Every demo image the samples use exists under ``root`` (CoBSAT's ``datasets/`` folder)."""
    if not root.is_dir():
        raise ThinkDiffError(f"dataset root not found: {root}. Unpack CoBSAT's datasets.zip (Hugging Face dataset "
                             "yzeng58/CoBSAT) and point [data] dataset_root at its datasets/ folder.")
    needed = sorted({path for sample in samples for path in sample.image_inputs})
    missing = [path for path in needed if not (root / path).is_file()]
    if not missing:
        return
    hint = (f" It looks like the folder above it: use {root / 'datasets'}." if (root / "datasets" / Path(missing[0]).parent).is_dir()
            else " The root must hold the folders {detail_space}_{object}/ (color_car/, style_dog/, ...).")
    raise ThinkDiffError(f"{len(missing)} of {len(needed)} CoBSAT images are missing under {root}, e.g. "
                         f"{', '.join(missing[:3])}.{hint}")
