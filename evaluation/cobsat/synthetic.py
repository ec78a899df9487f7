"""A synthetic CoBSAT stand-in that proves the scoring plumbing without any model.

- The dataset has CoBSAT's layout (``{detail_space}_{object}/{detail}_{object}.jpg``, 5 themes x 10 x 10 images): each
  object or animal is a shape, each colour a fill; the other themes' details are written under the shape.
- The prompt list is drawn here (seeded permutations of 0-9), never CoBSAT's own.
- Two generators draw the picture of a (detail, object): ``oracle`` the ground truth, ``random`` a uniform guess.
- A rule-based judge answers the two questions of the colour tasks by measuring the picture: the fill's colour
  nearest to the palette, and the shape mask that overlaps best. It replies like a VLM ("3"), so its answers go
  through the protocol's parser.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from thinkdiff.errors import ThinkDiffError

from .protocol import PROMPTS_PER_TASK, TASKS, VOCABULARIES, Task, image_path, item
from .records import Generated
from .samples import Sample

SIDE = 128
BACKGROUND = (128, 128, 128)
FOREGROUND_DISTANCE = 60  # RGB distance from the background that counts as the shape
PALETTE = {"yellow": (240, 220, 30), "white": (250, 250, 250), "red": (220, 30, 30), "purple": (130, 40, 170),
           "pink": (250, 150, 200), "orange": (250, 140, 20), "green": (30, 170, 60), "brown": (120, 70, 30),
           "blue": (30, 70, 220), "black": (10, 10, 10)}
SHAPES = ("circle", "triangle", "square", "diamond", "wide bar", "tall bar", "cross", "ring", "hexagon", "star")
_OPTION_RE = re.compile(r"\((\d+)\)(.+?)(?= \(\d+\)|\. Answer)")


def _polygon(kind: str) -> list[tuple[float, float]]:
    """Corners in the unit square."""
    if kind == "triangle":
        return [(0.5, 0.15), (0.85, 0.8), (0.15, 0.8)]
    if kind == "diamond":
        return [(0.5, 0.12), (0.88, 0.5), (0.5, 0.88), (0.12, 0.5)]
    if kind == "hexagon":
        return [(0.86, 0.5), (0.68, 0.81), (0.32, 0.81), (0.14, 0.5), (0.32, 0.19), (0.68, 0.19)]
    if kind == "star":
        return [(0.5 + r * math.sin(k * math.pi / 5), 0.52 - r * math.cos(k * math.pi / 5))
                for k, r in zip(range(10), [0.4, 0.16] * 5, strict=True)]
    boxes = {"square": (0.22, 0.22, 0.78, 0.78), "wide bar": (0.1, 0.38, 0.9, 0.62), "tall bar": (0.38, 0.1, 0.62, 0.9)}
    x0, y0, x1, y1 = boxes[kind]
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, fill: tuple[int, int, int] | int, side: int = SIDE) -> None:
    def box(margin: float) -> list[float]:
        return [margin * side, margin * side, (1 - margin) * side, (1 - margin) * side]

    if kind in ("circle", "ring"):
        draw.ellipse(box(0.15), fill=fill)
        if kind == "ring":
            draw.ellipse(box(0.32), fill=BACKGROUND if isinstance(fill, tuple) else 0)
    elif kind == "cross":
        draw.polygon([(x * side, y * side) for x, y in _polygon("wide bar")], fill=fill)
        draw.polygon([(x * side, y * side) for x, y in _polygon("tall bar")], fill=fill)
    else:
        draw.polygon([(x * side, y * side) for x, y in _polygon(kind)], fill=fill)


def shape_of(obj: str) -> str:
    """The shape drawn for an object or animal (by its place in its vocabulary)."""
    vocabulary = VOCABULARIES["object"] if obj in VOCABULARIES["object"] else VOCABULARIES["animal"]
    return SHAPES[vocabulary.index(obj)]


def render(task: Task, detail: str, obj: str) -> Image.Image:
    """The picture of ``obj`` with ``detail``: a coloured shape (colour theme) or a shape labelled with the detail."""
    detail = item(detail)
    # The colour at the detail's place in its vocabulary: a colour detail's own colour.
    colour = PALETTE[VOCABULARIES["color"][task.vocabulary("detail").index(detail)]]
    image = Image.new("RGB", (SIDE, SIDE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw_shape(draw, shape_of(obj), colour)
    if task.detail_space != "color":
        draw.text((4, SIDE - 14), detail, fill=(255, 255, 255))
    return image


def write_standin(root: Path) -> Path:
    """All 500 pictures of the five themes under ``root`` in CoBSAT's layout."""
    for task in (TASKS[t] for t in (1, 3, 5, 7, 9)):  # one "-I" task per theme covers every (detail, object)
        for detail in task.vocabulary("detail"):
            for obj in task.vocabulary("obj"):
                path = root / image_path(task, detail, obj)
                path.parent.mkdir(parents=True, exist_ok=True)
                render(task, detail, obj).save(path, quality=95)
    return root


def write_prompt_list(path: Path, seed: int = 0, entries: int = PROMPTS_PER_TASK) -> Path:
    """A prompt list shaped like CoBSAT's (``x_list``/``theta_list`` permutations of 0-9), drawn from ``seed``."""
    rng = random.Random(seed)
    data = [{"x_list": rng.sample(range(10), 10), "theta_list": rng.sample(range(10), 10)} for _ in range(entries)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


class DrawingBackend:
    """The ``oracle`` (draws the ground truth) and ``random`` (draws a uniform guess, seeded per sample) generators."""

    def __init__(self, oracle: bool) -> None:
        self.oracle = oracle

    def generate(self, samples: Sequence[Sample], seeds: Sequence[int]) -> list[Generated]:
        out = []
        for sample, seed in zip(samples, seeds, strict=True):
            task = TASKS[sample.task]
            if self.oracle:
                detail, obj = sample.gt["detail"], sample.gt["obj"]
            else:
                rng = random.Random(seed)
                detail, obj = rng.choice(task.vocabulary("detail")), rng.choice(task.vocabulary("obj"))
            out.append(Generated(render(task, detail, obj)))
        return out


def _shape_masks() -> dict[str, np.ndarray]:
    masks = {}
    for kind in SHAPES:
        mask = Image.new("L", (SIDE, SIDE), 0)
        draw_shape(ImageDraw.Draw(mask), kind, 255)
        masks[kind] = np.asarray(mask) > 127
    return masks


class RuleJudge:
    """Answers colour and main-object questions about synthetic pictures by measuring them (no model)."""

    name = "rules"

    def __init__(self) -> None:
        self.masks = _shape_masks()

    def look(self, path: Path) -> tuple[str, str]:
        """(colour, shape) of the picture: the palette colour nearest the shape's median, the best-overlapping mask."""
        pixels = np.asarray(Image.open(path).convert("RGB").resize((SIDE, SIDE)), dtype=np.float32)
        foreground = np.linalg.norm(pixels - np.array(BACKGROUND, dtype=np.float32), axis=-1) > FOREGROUND_DISTANCE
        if not foreground.any():
            return "", ""
        median = np.median(pixels[foreground], axis=0)
        colour = min(PALETTE, key=lambda name: float(np.linalg.norm(median - np.array(PALETTE[name]))))
        iou = {kind: (mask & foreground).sum() / (mask | foreground).sum() for kind, mask in self.masks.items()}
        return colour, max(iou, key=iou.get)

    def answer(self, questions: Sequence[tuple[Path, str]]) -> list[str]:
        replies = []
        for path, text in questions:
            options = {name: number for number, name in _OPTION_RE.findall(text)}
            colour, shape = self.look(path)
            if text.startswith("What is the color"):
                replies.append(options.get(colour, "I cannot tell"))
            elif text.startswith("What is the main object"):
                replies.append(next((n for name, n in options.items() if shape and shape_of(name) == shape), "I cannot tell"))
            else:
                raise ThinkDiffError("the rule judge only answers the colour tasks (1 and 2) of the synthetic stand-in; "
                                     "use judge.model = \"llava\" for real images")
        return replies
