"""``samples``: CoBSAT's N-shot samples, checked against vectors worked out by hand from the vocabularies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from evaluation.__main__ import main
from evaluation.cobsat.prompt import INSTRUCTION, thinkdiff_prompt
from evaluation.cobsat.protocol import TASKS
from evaluation.cobsat.samples import (
    Sample,
    build_samples,
    check_dataset_root,
    check_selection,
    parse_numbers,
    read_prompt_list,
    read_samples,
    write_samples,
)
from thinkdiff.errors import ThinkDiffError

# (task, shot, entry) -> (text_inputs, image_inputs, gt detail, gt obj, save_name), worked out by hand from the
# vocabularies and tests/evaluation/conftest.py HAND_ENTRIES (x indices 8, 7, 5, ... and theta_list[3] = 4 in entry 0).
VECTORS = {
    (1, 2, 0): (["blue: ", "brown: ", "orange: "], ["color_car/blue_car.jpg", "color_car/brown_car.jpg"], "orange", "car",
                "0_car_blue_brown_orange"),
    (2, 2, 0): (["bag: ", "ball: ", "box: "], ["color_bag/pink_bag.jpg", "color_ball/pink_ball.jpg"], "pink", "box",
                "0_pink_bag_ball_box"),
    (3, 2, 0): (["cave: ", "space: ", "gym: "], ["background_monkey/cave_monkey.jpg", "background_monkey/space_monkey.jpg"],
                "gym", "monkey", "0_monkey_cave_space_gym"),
    (4, 2, 0): (["cat: ", "cow: ", "lion: "], ["background_cat/park_cat.jpg", "background_cow/park_cow.jpg"], "park", "lion",
                "0_park_cat_cow_lion"),
    (5, 2, 0): (["wireframe: ", "futuristic: ", "icon: "], ["style_car/3d_car.jpg", "style_car/futuristic_car.jpg"], "icon",
                "car", "0_car_wireframe_futuristic_icon"),
    (6, 2, 0): (["bag: ", "ball: ", "box: "], ["style_bag/lego_bag.jpg", "style_ball/lego_ball.jpg"], "lego", "box",
                "0_lego_bag_ball_box"),
    (7, 2, 0): (["cry: ", "drink: ", "fly: "], ["action_monkey/cry_monkey.jpg", "action_monkey/drink_monkey.jpg"], "fly",
                "monkey", "0_monkey_cry_drink_fly"),
    (8, 2, 0): (["cat: ", "cow: ", "lion: "], ["action_cat/read_cat.jpg", "action_cow/read_cow.jpg"], "read", "lion",
                "0_read_cat_cow_lion"),
    (9, 2, 0): (["denim: ", "lace: ", "metal: "], ["texture_car/denim_car.jpg", "texture_car/lace_car.jpg"], "metal", "car",
                "0_car_denim_lace_metal"),
    (10, 2, 0): (["bag: ", "ball: ", "box: "], ["texture_bag/paper_bag.jpg", "texture_ball/paper_ball.jpg"], "paper", "box",
                 "0_paper_bag_ball_box"),
    # Display words: "park" is shown as "amusement park", "3d" as "wireframe", in the texts and the output name; image
    # paths keep the raw items; a latent theta stays raw in the ground truth and the name (as CoBSAT's load_dataset.py).
    (3, 2, 1): (["amusement park: ", "beach: ", "desert: "], ["background_cat/park_cat.jpg", "background_cat/beach_cat.jpg"],
                "desert", "cat", "1_cat_amusement park_beach_desert"),
    (6, 2, 1): (["car: ", "leaf: ", "hat: "], ["style_car/3d_car.jpg", "style_leaf/3d_leaf.jpg"], "3d", "hat", "1_3d_car_leaf_hat"),
    (5, 2, 2): (["watercolor: ", "sketch: ", "wireframe: "], ["style_book/watercolor_book.jpg", "style_book/sketch_book.jpg"],
                "wireframe", "book", "2_book_watercolor_sketch_wireframe"),
    # 4-shot: five texts, four images, theta from theta_list[5].
    (1, 4, 1): (["pink: ", "yellow: ", "white: ", "red: ", "purple: "],
                ["color_car/pink_car.jpg", "color_car/yellow_car.jpg", "color_car/white_car.jpg", "color_car/red_car.jpg"],
                "purple", "car", "1_car_pink_yellow_white_red_purple"),
    (4, 4, 1): (["monkey: ", "zebra: ", "tiger: ", "sheep: ", "pig: "],
                ["background_monkey/park_monkey.jpg", "background_zebra/park_zebra.jpg", "background_tiger/park_tiger.jpg",
                 "background_sheep/park_sheep.jpg"], "park", "pig", "1_park_monkey_zebra_tiger_sheep_pig"),
}


@pytest.fixture(scope="module")
def all_samples(prompt_list: Path) -> dict[tuple[int, int, int], Sample]:
    return {(s.task, s.shot, s.index): s for s in build_samples(prompt_list, list(range(1, 11)), [2, 4], count=3)}


@pytest.mark.parametrize("key", VECTORS, ids=lambda k: f"task{k[0]}-{k[1]}shot-entry{k[2]}")
def test_each_sample_matches_its_hand_checked_vector(prompt_list: Path, key):
    texts, images, detail, obj, name = VECTORS[key]
    task, shot, index = key
    sample = build_samples(prompt_list, [task], [shot], count=index + 1)[index]  # built here, not in a shared fixture
    assert (list(sample.text_inputs), list(sample.image_inputs), sample.gt, sample.save_name) == (
        texts, images, {"detail": detail, "obj": obj}, name)


@pytest.mark.parametrize(("task", "theme", "x_space", "theta_space", "name"), [
    (1, "color_object", "color", "object", "Color-I"), (2, "color_object", "object", "color", "Color-II"),
    (3, "background_animal", "background", "animal", "Background-I"), (4, "background_animal", "animal", "background", "Background-II"),
    (5, "style_object", "style", "object", "Style-I"), (6, "style_object", "object", "style", "Style-II"),
    (7, "action_animal", "action", "animal", "Action-I"), (8, "action_animal", "animal", "action", "Action-II"),
    (9, "texture_object", "texture", "object", "Texture-I"), (10, "texture_object", "object", "texture", "Texture-II"),
])
def test_every_tasks_theme_and_spaces(task, theme, x_space, theta_space, name):
    assert (TASKS[task].theme, TASKS[task].x_space, TASKS[task].theta_space, TASKS[task].name) == (theme, x_space, theta_space, name)


def test_every_image_a_sample_uses_exists_in_the_standin(all_samples, standin):
    check_dataset_root(standin, all_samples.values())
    assert {len(s.image_inputs) for s in all_samples.values()} == {2, 4}


def test_the_thinkdiff_prompt_is_the_reference_text(all_samples):
    """Reference 7.2: the instruction, "Word k: t_k, " + image per demo, blank lines between, the query word last."""
    assert thinkdiff_prompt(all_samples[1, 2, 0]) == (
        "I give you several words and pictures. First, please analyse what the next picture is. Then give me a detailed "
        "diffusion prompt to describe the next picture. Please only provide me the detailed prompt and start the answer "
        "with 'Create an image'.\n\nWord 1: blue, <image>\n\nWord 2: brown, <image>\n\nWord 3: orange, ")
    assert thinkdiff_prompt(all_samples[1, 4, 1], "") == (
        "Word 1: pink, <image>\n\nWord 2: yellow, <image>\n\nWord 3: white, <image>\n\nWord 4: red, <image>\n\nWord 5: purple, ")
    assert INSTRUCTION.endswith("'Create an image'.\n\n")


def test_the_cli_writes_samples_without_a_config(tmp_path: Path, prompt_list: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["cobsat", "samples", "--prompt-list", str(prompt_list), "--tasks", "1-10", "--shots", "2,4",
                 "--out", "samples.jsonl"]) == 0
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 10 * 2 * 1000
    first = json.loads(lines[0])
    assert first == {"task": 1, "shot": 2, "index": 0, "text_inputs": ["blue: ", "brown: ", "orange: "],
                     "image_inputs": ["color_car/blue_car.jpg", "color_car/brown_car.jpg"],
                     "gt": {"detail": "orange", "obj": "car"}, "save_name": "0_car_blue_brown_orange"}
    assert read_samples(tmp_path / "samples.jsonl")[0] == Sample.from_json(first)


def test_parse_numbers():
    assert parse_numbers("1-10") == list(range(1, 11))
    assert parse_numbers("2,4") == [2, 4]
    assert parse_numbers("1-3, 7") == [1, 2, 3, 7]
    for text in ("one", "-1-3"):  # a range's first dash splits it: "" is not a number
        with pytest.raises(ThinkDiffError) as error:
            parse_numbers(text)
        assert str(error.value) == f"{text!r} is not a list of numbers such as 1-10 or 2,4"


@pytest.mark.parametrize(("tasks", "shots", "count", "message"), [
    ([], [2], 1, "tasks must be among 1-10, got []"), ([0, 1], [2], 1, "tasks must be among 1-10, got [0, 1]"),
    ([1], [], 1, "shots must be among 2, 4, 6, 8, got []"), ([1], [2, 3], 1, "shots must be among 2, 4, 6, 8, got [2, 3]"),
    ([1], [2], 0, "samples_per_task must be 1-1000, got 0"), ([1], [2], 1001, "samples_per_task must be 1-1000, got 1001"),
    (list(range(1, 11)), [2, 4, 6, 8], 1, None), ([10], [8], 1000, None),  # the whole range of each is allowed
])
def test_selections_are_checked(tasks, shots, count, message):
    if message is None:
        check_selection(tasks, shots, count)
        return
    with pytest.raises(ThinkDiffError) as error:
        check_selection(tasks, shots, count)
    assert str(error.value) == message


def test_samples_files_are_read_back_or_explained(tmp_path: Path, all_samples):
    samples = [all_samples[1, 2, 0], all_samples[4, 4, 1]]
    path = write_samples(samples, tmp_path / "new" / "folders" / "samples.jsonl")
    path.write_text(path.read_text() + "\n")  # a blank line is skipped
    assert read_samples(path) == samples
    with pytest.raises(ThinkDiffError) as error:
        read_samples(tmp_path / "none.jsonl")
    assert str(error.value) == f"samples file not found: {tmp_path / 'none.jsonl'}; write it with `python -m evaluation cobsat samples`"
    for line in ("not json", "{}", json.dumps({**samples[0].to_json(), "gt": 3})):
        path.write_text(line + "\n")
        with pytest.raises(ThinkDiffError, match=rf"^{path} is not a samples file written by `python -m evaluation cobsat samples` \("):
            read_samples(path)


LONG_ENTRY = {"x_list": [0] * 40, "theta_list": [10]}


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    ("{}", "not a non-empty JSON list"), ('{"x_list": [0]}', "not a non-empty JSON list"), ("[]", "not a non-empty JSON list"),
    ('[{"x_list": [1, 2]}]', 'entry 0 is {"x_list": [1, 2]}'),
    ('[{"x_list": [0, 1, 2], "theta_list": [0, 1, 12]}]', 'entry 0 is {"x_list": [0, 1, 2], "theta_list": [0, 1, 12]}'),
    ('[{"x_list": [0], "theta_list": [0]}, {"x_list": [0, 10], "theta_list": [0]}]', 'entry 1 is {"x_list": [0, 10], "theta_list": [0]}'),
    ('[{"x_list": [-1], "theta_list": [0]}]', 'entry 0 is {"x_list": [-1], "theta_list": [0]}'),
    ('[{"x_list": [true], "theta_list": [0]}]', 'entry 0 is {"x_list": [true], "theta_list": [0]}'),
    ('[{"x_list": ["1"], "theta_list": [0]}]', 'entry 0 is {"x_list": ["1"], "theta_list": [0]}'),
    ('[{"x_list": [], "theta_list": [0]}]', 'entry 0 is {"x_list": [], "theta_list": [0]}'),
    ('[{"x_list": [0], "theta_list": 0}]', 'entry 0 is {"x_list": [0], "theta_list": 0}'),
    ('["x_list"]', 'entry 0 is "x_list"'),
    (json.dumps([LONG_ENTRY]), f"entry 0 is {json.dumps(LONG_ENTRY)[:120]}"),  # cut at 120 characters
])
def test_a_damaged_prompt_list_is_explained(tmp_path: Path, content: str, message: str):
    path = tmp_path / "prompts.json"
    path.write_text(content)
    with pytest.raises(ThinkDiffError) as error:
        read_prompt_list(path)
    assert str(error.value) == (f"{path} is not a CoBSAT prompt list: {message}. Use load_datasets/prompts_list_default.json from "
                                "https://github.com/UW-Madison-Lee-Lab/CoBSAT unchanged (1000 entries of x_list/theta_list "
                                "permutations of 0-9).")


def test_an_entry_just_long_enough_is_used(tmp_path: Path):
    """N shots need N + 1 x indices and N + 2 theta indices (theta_list[N + 1]), worked out by hand for Color-I, 2-shot:
    theta = objects[3] = chair, xs = colours[0, 1, 2] = yellow, white, red."""
    path = tmp_path / "short.json"
    path.write_text(json.dumps([{"x_list": [0, 1, 2], "theta_list": [9, 9, 9, 3]}]))
    assert build_samples(path, [1], [2], count=1) == [
        Sample(1, 2, 0, ("yellow: ", "white: ", "red: "), ("color_chair/yellow_chair.jpg", "color_chair/white_chair.jpg"),
               {"detail": "red", "obj": "chair"}, "0_chair_yellow_white_red")]
    for entry in ({"x_list": [0, 1, 2], "theta_list": list(range(10))}, {"x_list": list(range(10)), "theta_list": [0, 1, 2, 3, 4]}):
        path.write_text(json.dumps([entry]))
        with pytest.raises(ThinkDiffError) as error:
            build_samples(path, [1], [4], count=1)
        assert str(error.value) == "prompt list entry 0 is too short for 4 shots (x_list needs 5 indices, theta_list 6)"


def test_bad_selections_are_explained(tmp_path: Path, prompt_list: Path):
    with pytest.raises(ThinkDiffError, match="not found.*UW-Madison-Lee-Lab"):
        build_samples(tmp_path / "missing.json", [1], [2])
    with pytest.raises(ThinkDiffError, match="shots must be among 2, 4, 6, 8"):
        build_samples(prompt_list, [1], [3])
    with pytest.raises(ThinkDiffError, match="tasks must be among 1-10"):
        build_samples(prompt_list, [11], [2])
    short = tmp_path / "short.json"
    short.write_text(json.dumps([{"x_list": [0, 1, 2], "theta_list": [0, 1, 2, 3]}]))
    with pytest.raises(ThinkDiffError, match="too short for 4 shots"):
        build_samples(short, [1], [4], count=1)
    with pytest.raises(ThinkDiffError) as error:
        build_samples(short, [1], [2], count=2)
    assert str(error.value) == f"{short} has 1 entries, fewer than samples_per_task = 2"
    with pytest.raises(ThinkDiffError) as error:
        build_samples(tmp_path / "missing.json", [1], [2])
    assert str(error.value) == (f"prompt list not found: {tmp_path / 'missing.json'}. Take load_datasets/prompts_list_default.json "
                                "from a clone of https://github.com/UW-Madison-Lee-Lab/CoBSAT (it is not downloaded at run time).")


def test_a_wrong_dataset_root_is_explained(all_samples, standin: Path, tmp_path: Path):
    def message(root: Path, samples) -> str:
        with pytest.raises(ThinkDiffError) as error:
            check_dataset_root(root, samples)
        return str(error.value)

    assert message(tmp_path / "nowhere", all_samples.values()) == (
        f"dataset root not found: {tmp_path / 'nowhere'}. Unpack CoBSAT's datasets.zip (Hugging Face dataset yzeng58/CoBSAT) "
        "and point [data] dataset_root at its datasets/ folder.")
    assert message(standin.parent, [all_samples[1, 2, 0]]) == (  # the folder above datasets/
        f"2 of 2 CoBSAT images are missing under {standin.parent}, e.g. color_car/blue_car.jpg, color_car/brown_car.jpg. "
        f"It looks like the folder above it: use {standin}.")
    (tmp_path / "above" / "datasets" / "color_bag").mkdir(parents=True)  # the first missing image's folder decides
    above = message(tmp_path / "above", [all_samples[2, 2, 0]])  # color_bag/pink_bag.jpg, then color_ball/pink_ball.jpg
    assert above.endswith(f"It looks like the folder above it: use {tmp_path / 'above' / 'datasets'}.")
    (tmp_path / "color_car").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "color_car" / "pink_car.jpg")
    # 4-shot entry 1: pink, yellow, white, red cars; three of the missing ones named, in sorted order.
    assert message(tmp_path, [all_samples[1, 4, 1], all_samples[1, 2, 0]]) == (
        f"5 of 6 CoBSAT images are missing under {tmp_path}, e.g. color_car/blue_car.jpg, color_car/brown_car.jpg, "
        "color_car/red_car.jpg. The root must hold the folders {detail_space}_{object}/ (color_car/, style_dog/, ...).")
