"""The synthetic CoBSAT stand-in against references written out here: each shape's geometry, the palette, the labels,
the dataset's layout, the prompt list, the drawing generators and the rule judge's replies."""

from __future__ import annotations

import io
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from evaluation.cobsat.protocol import TASKS, VOCABULARIES, question
from evaluation.cobsat.samples import Sample
from evaluation.cobsat.synthetic import SIDE, DrawingBackend, RuleJudge, _shape_masks, draw_shape, render, write_prompt_list, write_standin
from thinkdiff.errors import ThinkDiffError

GREY = (128, 128, 128)
COLOURS = {"yellow": (240, 220, 30), "white": (250, 250, 250), "red": (220, 30, 30), "purple": (130, 40, 170),
           "pink": (250, 150, 200), "orange": (250, 140, 20), "green": (30, 170, 60), "brown": (120, 70, 30),
           "blue": (30, 70, 220), "black": (10, 10, 10)}
# The shape of each object and animal, by its place in its vocabulary.
SHAPE_ORDER = ("circle", "triangle", "square", "diamond", "wide bar", "tall bar", "cross", "ring", "hexagon", "star")
STAR = [(0.5 + (0.4 if k % 2 == 0 else 0.16) * math.sin(math.radians(36 * k)),
         0.52 - (0.4 if k % 2 == 0 else 0.16) * math.cos(math.radians(36 * k))) for k in range(10)]  # 5 points, one up
POLYGONS = {
    "triangle": [(0.5, 0.15), (0.85, 0.8), (0.15, 0.8)],
    "diamond": [(0.5, 0.12), (0.88, 0.5), (0.5, 0.88), (0.12, 0.5)],
    "hexagon": [(0.86, 0.5), (0.68, 0.81), (0.32, 0.81), (0.14, 0.5), (0.32, 0.19), (0.68, 0.19)],
    "star": STAR,
}
BOXES = {"square": (0.22, 0.22, 0.78, 0.78), "wide bar": (0.1, 0.38, 0.9, 0.62), "tall bar": (0.38, 0.1, 0.62, 0.9)}
CIRCLE, HOLE = 0.35, 0.18  # radii around the centre

# Pixel centres in the unit square.
Y, X = (np.mgrid[0:SIDE, 0:SIDE] + 0.5) / SIDE


def box_corners(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def inside(polygon: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd rule at the pixel centres."""
    result = np.zeros((SIDE, SIDE), dtype=bool)
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if y0 != y1:
            crosses = (y0 > Y) != (y1 > Y)
            result ^= crosses & (x0 + (Y - y0) * (x1 - x0) / (y1 - y0) > X)
    return result


def distance_to_edges(polygon: list[tuple[float, float]]) -> np.ndarray:
    """Each pixel centre's distance to the polygon's outline, in pixels."""
    best = np.full((SIDE, SIDE), np.inf)
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        t = np.clip(((X - x0) * (x1 - x0) + (Y - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
        best = np.minimum(best, np.hypot(X - x0 - t * (x1 - x0), Y - y0 - t * (y1 - y0)))
    return best * SIDE


def reference(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(inside the shape, distance to its outline in pixels) from the shape's description."""
    radius = np.hypot(X - 0.5, Y - 0.5)
    if kind == "circle":
        return radius <= CIRCLE, np.abs(radius - CIRCLE) * SIDE
    if kind == "ring":
        return (radius <= CIRCLE) & (radius >= HOLE), np.minimum(np.abs(radius - CIRCLE), np.abs(radius - HOLE)) * SIDE
    if kind == "cross":
        bars = [box_corners(*BOXES["wide bar"]), box_corners(*BOXES["tall bar"])]
        return inside(bars[0]) | inside(bars[1]), np.minimum(distance_to_edges(bars[0]), distance_to_edges(bars[1]))
    polygon = POLYGONS[kind] if kind in POLYGONS else box_corners(*BOXES[kind])
    return inside(polygon), distance_to_edges(polygon)


def assert_is_shape(mask: np.ndarray, kind: str) -> None:
    """The drawn mask is the shape: every pixel more than 1.5 pixels from its outline agrees (Pillow fills the pixels
    an edge crosses)."""
    expected, edge = reference(kind)
    away = edge > 1.5
    assert np.array_equal(mask[away], expected[away]), f"{kind}: {(mask != expected)[away].sum()} pixels off"


def save_png(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


@pytest.mark.parametrize("kind", SHAPE_ORDER)
def test_each_shape_mask_is_the_shape_described(kind: str):
    assert_is_shape(_shape_masks()[kind], kind)


@pytest.mark.parametrize("vocabulary", ["object", "animal"])
def test_render_draws_each_object_as_its_shape_in_its_colour(vocabulary: str):
    """A colour task's picture: the grey background and the shape (by the object's place in its vocabulary) in the
    detail's palette colour, nothing else (no label)."""
    for place, obj in enumerate(VOCABULARIES[vocabulary]):
        colour = list(COLOURS)[place]
        pixels = np.asarray(render(TASKS[1], colour, obj))
        shape = np.all(pixels == COLOURS[colour], axis=-1)
        assert np.all(shape | np.all(pixels == GREY, axis=-1)), obj
        assert_is_shape(shape, SHAPE_ORDER[place])


def test_draw_shape_on_a_mask_draws_the_fill_and_clears_the_ring_hole():
    mask = Image.new("L", (SIDE, SIDE), 0)
    draw_shape(ImageDraw.Draw(mask), "ring", 255)
    values = np.asarray(mask)
    assert set(np.unique(values)) == {0, 255}
    expected, edge = reference("ring")
    assert np.array_equal((values == 255)[edge > 1.5], expected[edge > 1.5])
    small = Image.new("L", (32, 32), 0)  # side: the unit square's size in pixels
    draw_shape(ImageDraw.Draw(small), "square", 9, side=32)
    assert np.argwhere(np.asarray(small) == 9).min(axis=0).tolist() == [7, 7]
    assert np.argwhere(np.asarray(small) == 9).max(axis=0).tolist() == [24, 24]


def label_rows(image: Image.Image) -> np.ndarray:
    """The rows under every shape but the tall bar and the cross (theirs reach y = 0.9)."""
    return np.asarray(image)[113:]


@pytest.mark.parametrize(("task_id", "detail", "obj", "colour"), [(3, "park", "zebra", "pink"), (5, "3d", "leaf", "blue"),
                                                                   (7, "swim", "pig", "yellow"), (9, "ceramic", "hat", "black")])
def test_other_themes_draw_the_colour_at_the_details_place_and_label_it(task_id: int, detail: str, obj: str, colour: str):
    """The shape's fill is the colour at the detail's place in its vocabulary; the detail is written in white, from
    (4, SIDE - 14), with Pillow's default font."""
    task = TASKS[task_id]
    image = render(task, detail, obj)
    centre = np.asarray(image)[SIDE // 2 - 8:SIDE // 2 + 8, SIDE // 2 - 8:SIDE // 2 + 8]
    place = VOCABULARIES[task.detail_space].index(detail)
    assert VOCABULARIES["color"][place] == colour
    assert np.all(centre == COLOURS[colour])
    label = Image.new("RGB", (SIDE, SIDE), GREY)
    ImageDraw.Draw(label).text((4, SIDE - 14), detail, fill=(255, 255, 255))
    assert np.array_equal(label_rows(image), label_rows(label))
    assert np.any(np.all(label_rows(image) > 200, axis=-1))  # white, antialiased
    if detail == "park":  # the display word draws the same picture
        assert np.array_equal(np.asarray(render(task, "amusement park", obj)), np.asarray(image))


def test_colour_pictures_have_no_label():
    assert np.all(label_rows(render(TASKS[1], "white", "leaf")) == GREY)
    assert np.all(label_rows(render(TASKS[2], "black", "bird")) == GREY)


def test_the_standin_has_cobsats_layout_and_the_rendered_pictures(tmp_path: Path):
    """500 JPEGs (quality 95), one per (detail, object) of each theme, named {detail_space}_{object}/{detail}_{object}.jpg.
    Written here, not by the session's fixture: mutation testing runs the tests that call write_standin."""
    standin = tmp_path / "new" / "datasets"
    assert write_standin(standin) == standin
    themes = {"color": "object", "background": "animal", "style": "object", "action": "animal", "texture": "object"}
    expected = {f"{space}_{obj}/{detail}_{obj}.jpg" for space, objects in themes.items()
                for detail in VOCABULARIES[space] for obj in VOCABULARIES[objects]}
    files = {path.relative_to(standin).as_posix() for path in standin.rglob("*") if path.is_file()}
    assert len(expected) == 500 and files == expected
    for task_id, detail, obj in [(1, "yellow", "leaf"), (3, "seafloor", "bird"), (5, "old", "apple"), (7, "angry", "zebra"),
                                 (9, "wood", "cup")]:
        jpeg = io.BytesIO()
        render(TASKS[task_id], detail, obj).save(jpeg, format="JPEG", quality=95)
        theme = f"{TASKS[task_id].detail_space}_{obj}"
        assert (standin / theme / f"{detail}_{obj}.jpg").read_bytes() == jpeg.getvalue()


def test_the_prompt_list_is_seeded_permutations(tmp_path: Path):
    """``entries`` entries, each two permutations of 0-9 drawn from random.Random(seed): x_list, then theta_list."""
    path = write_prompt_list(tmp_path / "new" / "folder" / "list.json", seed=7, entries=3)
    assert path == tmp_path / "new" / "folder" / "list.json"
    rng = random.Random(7)
    expected = []
    for _ in range(3):
        x = list(range(10))
        x_list = rng.sample(x, 10)
        expected.append({"x_list": x_list, "theta_list": rng.sample(x, 10)})
    assert json.loads(path.read_text(encoding="utf-8")) == expected
    default = json.loads(write_prompt_list(tmp_path / "default.json").read_text())
    assert len(default) == 1000 and all(sorted(e["x_list"]) == sorted(e["theta_list"]) == list(range(10)) for e in default)
    assert default == json.loads(write_prompt_list(tmp_path / "zero.json", seed=0).read_text())
    assert default != json.loads(write_prompt_list(tmp_path / "one.json", seed=1).read_text())


def sample(task: int, detail: str, obj: str, index: int = 0) -> Sample:
    return Sample(task, 2, index, (), (), {"detail": detail, "obj": obj}, f"s{index}")


def test_the_oracle_draws_the_ground_truth():
    samples = [sample(1, "red", "car"), sample(2, "blue", "apple", 1)]
    images = [generated.image for generated in DrawingBackend(oracle=True).generate(samples, [5, 6])]
    assert [np.asarray(i).tolist() for i in images] == [np.asarray(render(TASKS[1], "red", "car")).tolist(),
                                                         np.asarray(render(TASKS[2], "blue", "apple")).tolist()]


def test_the_random_generator_draws_a_guess_seeded_per_sample():
    """random.Random(seed) picks the detail, then the object, from the task's vocabularies, whatever the ground truth."""
    seeds = [3, 4, 3, 11]
    samples = [sample(1, "red", "car", i) for i in range(4)]
    images = [np.asarray(g.image) for g in DrawingBackend(oracle=False).generate(samples, seeds)]
    for seed, image in zip(seeds, images, strict=True):
        rng = random.Random(seed)
        detail, obj = rng.choice(VOCABULARIES["color"]), rng.choice(VOCABULARIES["object"])
        assert np.array_equal(image, np.asarray(render(TASKS[1], detail, obj))), seed
    assert np.array_equal(images[0], images[2]) and not np.array_equal(images[0], images[1])


@pytest.mark.parametrize("oracle", [True, False])
def test_the_drawing_generators_want_a_seed_per_sample(oracle: bool):
    with pytest.raises(ValueError, match="zip"):
        DrawingBackend(oracle).generate([sample(1, "red", "car"), sample(1, "red", "car", 1)], [1])


def test_the_rule_judge_answers_each_question_by_its_option_number(tmp_path: Path):
    path = save_png(render(TASKS[1], "purple", "chair"), tmp_path / "p.png")
    detail, obj = question(TASKS[1], "detail"), question(TASKS[1], "obj")
    assert RuleJudge().answer([(path, detail), (path, obj)]) == ["4", "4"]  # purple and chair: option 4 of each
    path = save_png(render(TASKS[2], "black", "apple"), tmp_path / "a.png")
    assert RuleJudge().answer([(path, obj), (path, detail)]) == ["10", "10"]
    animal = question(TASKS[3], "obj")  # the shape's option under another vocabulary (a square: sheep, the third)
    assert RuleJudge().answer([(save_png(render(TASKS[1], "red", "cup"), tmp_path / "c.png"), animal)]) == ["3"]


def test_an_empty_picture_has_no_colour_or_shape(tmp_path: Path):
    path = save_png(Image.new("RGB", (SIDE, SIDE), GREY), tmp_path / "empty.png")
    judge = RuleJudge()
    assert judge.look(path) == ("", "")
    assert judge.answer([(path, question(TASKS[1], "detail")), (path, question(TASKS[1], "obj"))]) == ["I cannot tell"] * 2


def test_a_colour_or_shape_missing_from_the_options_cannot_be_told(tmp_path: Path):
    path = save_png(render(TASKS[1], "red", "car"), tmp_path / "car.png")  # a red wide bar
    colour = "What is the color (of the main object) in this image? Answer from the following options:  (1)blue (2)green. Answer"
    obj = "What is the main object in this image? Answer from the following options:  (1)leaf (2)hat. Answer the number only"
    assert RuleJudge().answer([(path, colour), (path, obj)]) == ["I cannot tell"] * 2


def test_only_pixels_farther_than_60_from_the_background_count(tmp_path: Path):
    """A square at RGB distance 60 from the grey is background; at 61 it is the picture's shape and colour."""
    for distance, expected in [(60, ("", "")), (61, ("pink", "square"))]:
        image = Image.new("RGB", (SIDE, SIDE), GREY)
        draw_shape(ImageDraw.Draw(image), "square", (128 + distance, 128, 128))
        assert RuleJudge().look(save_png(image, tmp_path / f"{distance}.png")) == expected


@pytest.mark.parametrize(("mode", "colour", "obj", "shape"), [("RGBA", "blue", "apple", "star"), ("L", "white", "ball", "ring")])
def test_the_rule_judge_reads_other_picture_modes(tmp_path: Path, mode: str, colour: str, obj: str, shape: str):
    path = save_png(render(TASKS[1], colour, obj).convert(mode), tmp_path / f"{mode}.png")
    assert RuleJudge().look(path) == (colour, shape)


def test_the_rule_judge_measures_other_sizes_at_its_own(tmp_path: Path):
    path = save_png(render(TASKS[1], "green", "box").resize((300, 300), Image.NEAREST), tmp_path / "big.png")
    assert RuleJudge().look(path) == ("green", "tall bar")


def test_the_rule_judge_refuses_other_questions_and_says_so(tmp_path: Path):
    path = save_png(render(TASKS[3], "park", "dog"), tmp_path / "x.png")
    message = ("the rule judge only answers the colour tasks (1 and 2) of the synthetic stand-in; "
               'use judge.model = "llava" for real images')
    with pytest.raises(ThinkDiffError, match=f"^{re.escape(message)}$"):
        RuleJudge().answer([(path, question(TASKS[3], "detail"))])
