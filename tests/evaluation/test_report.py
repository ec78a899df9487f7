"""``report`` from fixed judge summaries: the paper's layout, averages, the difference to the paper, CSV and chart."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageDraw

from evaluation.cobsat.config import load_config
from evaluation.cobsat.judge import write_summary
from evaluation.cobsat.paper import PAPER, PAPER_ROW
from evaluation.cobsat.protocol import TASKS
from evaluation.cobsat.report import DELTA_ROW, chart, markdown, report, tables, write_csv
from evaluation.cobsat.report import chart as chart_file
from tests.support.ascii_locale import python_in_ascii_locale

# The paper's ThinkDiff-LVLM row, so this run's difference to it is 0; 6-shot has no paper numbers.
OURS = {2: {t: v for t, v in PAPER[2][PAPER_ROW].items()}, 4: {t: round(v + 0.01, 3) for t, v in PAPER[4][PAPER_ROW].items()},
        6: {1: 0.5, 2: 0.25}}


def summary_rows() -> list[dict]:
    return [{"shot": shot, "task": task, "task_name": TASKS[task].name, "samples": 1000, "judged": 1000,
             "missing_images": 3 if (shot, task) == (2, 1) else 0, "correct": value, "clip_correct": 0.5}
            for shot, values in OURS.items() for task, value in values.items()]


def test_report_tables_csv_and_chart(tmp_path: Path):
    config = load_config(None, [f'run.output_dir="{tmp_path}"', 'judge.model="rules"', 'report.label="ours"'])
    scores = tmp_path / "scores" / "rules"
    scores.mkdir(parents=True)
    write_summary(summary_rows(), scores / "summary.csv")
    markdown, table, chart = report(config)
    text = markdown.read_text()
    assert ("| | Color-I | Background-I | Style-I | Action-I | Texture-I | Color-II | Background-II | Style-II | Action-II "
            "| Texture-II | avg |") in text
    assert ("| ThinkDiff-LVLM (paper) | 0.638 | 0.362 | 0.254 | 0.434 | 0.317 | 0.610 | 0.590 | 0.432 | 0.664 | 0.332 | 0.463 |"
            in text)  # the paper's 4-shot headline average
    assert "| SEED-LLaMA | 0.680 | 0.348 | 0.203 | 0.182 | 0.196 | 0.287 | 0.467 | 0.297 | 0.261 | 0.163 | 0.308 |" in text
    assert "| GILL | 0.106 | 0.044 | 0.041 | 0.073 | 0.087 | 0.022 | 0.059 | 0.044 | 0.032 | 0.067 | 0.058 |" in text  # 0.0575
    assert "| ours | 0.622 | 0.349 | 0.237 | 0.459 | 0.290 | 0.511 | 0.534 | 0.340 | 0.534 | 0.292 | 0.417 |" in text
    assert "| Δ vs paper |" + " +0.010 |" * 11 in text and "| Δ vs paper |" + " +0.000 |" * 11 in text
    assert text.count("| ours, CLIP ViT-B/32 |" + " 0.500 |" * 11) == 2
    assert text.count("This run covers only some tasks") == 1  # 2- and 4-shot have all ten tasks
    assert text.startswith("# CoBSAT accuracy (judge: rules)\n")
    assert "\n10000 samples over 10 task(s), 3 image(s) missing (counted wrong).\n" in text  # none unjudged: not said
    six = text.split("## 6-shot")[1]
    assert "| ours | 0.500 | – | – | – | – | 0.250 | – | – | – | – | 0.375 |" in six and "paper" not in six
    assert "This run covers only some tasks" in six
    rows = list(csv.DictReader(table.open()))
    ours_4 = {r["task"]: float(r["accuracy"]) for r in rows if r["shot"] == "4" and r["row"] == "ours"}
    assert ours_4["1"] == 0.648 and abs(ours_4["avg"] - 0.4733) < 1e-4
    assert {r["row"] for r in rows if r["shot"] == "2"} == {"SEED-LLaMA", "Emu", "GILL", PAPER_ROW, "ours", "Δ vs paper",
                                                            "ours, CLIP ViT-B/32"}
    assert Image.open(chart).size == (1200, 3 * 360)
    same = chart_file(tables(summary_rows(), "ours"), tmp_path / "same.png", "rules")  # the judge's name in its titles
    assert Image.open(chart).tobytes() == Image.open(same).tobytes()


def six_shot_summary() -> list[dict]:
    """6-shot (no paper numbers), two tasks: one unjudged sample and one missing image in task 1."""
    return [{"shot": 6, "task": 1, "task_name": "Color-I", "samples": "4", "judged": "3", "missing_images": "1",
             "correct": 0.0625, "clip_correct": 0.25},
            {"shot": 6, "task": 2, "task_name": "Color-II", "samples": "4", "judged": "4", "missing_images": "0",
             "correct": 0.25, "clip_correct": 0.75}]


def test_the_whole_markdown_of_a_small_run():
    """Every line, worked out by hand: three decimals rounded half up (0.0625 -> 0.063, the average 0.15625 -> 0.156)."""
    summary = six_shot_summary()
    assert markdown(tables(summary, "ours"), "rules", summary) == (
        "# CoBSAT accuracy (judge: rules)\n"
        "\n"
        "Accuracy = both questions right (the paper's metric). Paper rows: arXiv 2502.10458 Tables 1 (2-shot) and 2 (4-shot).\n"
        "\n"
        "## 6-shot\n"
        "\n"
        "8 samples over 2 task(s), 1 image(s) missing, 1 not judged (counted wrong).\n"
        "\n"
        "This run covers only some tasks; its average is over those.\n"
        "\n"
        "| | Color-I | Background-I | Style-I | Action-I | Texture-I | Color-II | Background-II | Style-II | Action-II | Texture-II "
        "| avg |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| ours | 0.063 | – | – | – | – | 0.250 | – | – | – | – | 0.156 |\n"
        "| ours, CLIP ViT-B/32 | 0.250 | – | – | – | – | 0.750 | – | – | – | – | 0.500 |\n")
    no_clip = [{k: v for k, v in row.items() if k != "clip_correct"} for row in summary]
    assert tables(no_clip, "ours") == {6: [("ours", {1: 0.0625, 2: 0.25})]}
    # A run below the paper: negative differences keep their sign.
    below = [{**row, "shot": 2, "correct": PAPER[2][PAPER_ROW][row["task"]] - 0.125} for row in no_clip]
    delta = next(line for line in markdown(tables(below, "ours"), "rules", below).splitlines() if line.startswith("| Δ"))
    assert delta == "| Δ vs paper | -0.125 | – | – | – | – | -0.125 | – | – | – | – | -0.125 |"


def test_the_csv_and_the_chart_of_a_small_run(tmp_path: Path):
    shot_tables = tables(six_shot_summary(), "ours")
    assert write_csv(shot_tables, tmp_path / "t.csv").read_bytes().decode().split("\r\n") == [
        "shot,row,task,task_name,accuracy", "6,ours,1,Color-I,0.0625", "6,ours,2,Color-II,0.2500", "6,ours,avg,average,0.1562",
        "6,\"ours, CLIP ViT-B/32\",1,Color-I,0.2500", "6,\"ours, CLIP ViT-B/32\",2,Color-II,0.7500",
        "6,\"ours, CLIP ViT-B/32\",avg,average,0.5000", ""]
    two = {**shot_tables, 2: [("a", {1: 0.5}), (DELTA_ROW, {1: -0.2}), ("b", {2: 1.0})]}
    image = Image.open(chart(two, tmp_path / "c.png", "rules")).convert("RGB")
    assert image.size == (1200, 720)
    # The layout by hand: panels 360 px high; plot from x 60 to 1180 and y panel top + 40 to panel bottom - 50;
    # 11 groups (PAPER_ORDER's tasks, then avg) of 1120 / 11 px, bars filling the middle 80 % of a group side by side.
    group = 1120 / 11

    def bar_pixels(panel: int, column: int, series: int, count: int, value: float) -> tuple[tuple, tuple]:
        """The colours inside a bar, just under its top, and just above its top."""
        top, bottom = panel * 360 + 40, (panel + 1) * 360 - 50
        width = group * 0.8 / count
        x = int(60 + column * group + group * 0.1 + (series + 0.5) * width)
        y = bottom - value * (bottom - top)
        return image.getpixel((x, int(y) + 3)), image.getpixel((x, int(y) - 3))

    grey, gold, blue = (150, 150, 150), (190, 160, 100), (120, 170, 200)
    # Panel 0 is 6-shot (ours 0.0625 and 0.25; CLIP 0.25 and 0.75; averages 0.15625 and 0.5), panel 1 is 2-shot.
    for column, series, value in ((0, 0, 0.0625), (5, 0, 0.25), (10, 0, 0.15625), (0, 1, 0.25), (5, 1, 0.75), (10, 1, 0.5)):
        inside, above = bar_pixels(0, column, series, 2, value)
        assert inside == (grey, gold)[series] and above != inside, (column, series)
    assert bar_pixels(0, 1, 0, 2, 0.1)[0] == (255, 255, 255)  # no bar for a task the run does not have
    for column, series, value, colour in ((0, 0, 0.5, grey), (5, 1, 1.0, gold), (10, 0, 0.5, grey), (10, 1, 1.0, gold)):
        inside, above = bar_pixels(1, column, series, 2, value)  # the difference row is not drawn
        assert inside == colour and above != colour, (column, series)
    assert blue not in {image.getpixel((x, y)) for x in range(0, 1200, 3) for y in range(360, 720, 3)}
    # Exactly: each bar's pixels, from x0 + s * bar to x0 + (s + 1) * bar - 1 and from the value's height down to the
    # axis; each legend box 11 x 11 px from (70 + 190 s, top - 16).
    def pixels(picture: Image.Image, box: tuple[int, int, int, int], colour: tuple) -> set[tuple[int, int]]:
        return {(x, y) for x in range(box[0], box[2]) for y in range(box[1], box[3]) if picture.getpixel((x, y)) == colour}

    for column, series, value in ((0, 0, 0.0625), (5, 0, 0.25), (0, 1, 0.25), (5, 1, 0.75), (10, 1, 0.5)):
        colour, width, bottom = (grey, gold)[series], group * 0.8 / 2, 310
        x0 = 60 + column * group + group * 0.1
        corners = [x0 + series * width, bottom - value * 270, x0 + (series + 1) * width - 1, bottom]
        reference = Image.new("RGB", image.size, "white")
        ImageDraw.Draw(reference).rectangle(corners, fill=colour)
        box = (int(corners[0]) - 3, int(corners[1]) - 3, int(corners[2]) + 4, bottom)  # above the axis line
        assert pixels(image, box, colour) == pixels(reference, box, colour) != set(), (column, series)
    for panel in (0, 1):
        top, bottom = panel * 360 + 40, (panel + 1) * 360 - 50
        assert [image.getpixel((70 + 5 + s * 190, top - 11)) for s in (0, 1)] == [grey, gold]  # the legend's boxes
        for entry, colour in enumerate((grey, gold)):
            x = 70 + entry * 190
            assert pixels(image, (x - 3, top - 20, x + 14, top - 2), colour) == {
                (i, j) for i in range(x, x + 11) for j in range(top - 16, top - 5)}, (panel, entry)
        assert image.getpixel((61, bottom)) == (0, 0, 0) and image.getpixel((1178, bottom - 135)) == (225, 225, 225)


def test_report_files_are_utf_8_whatever_the_locale(tmp_path: Path):
    """Under a C locale without UTF-8 mode (ASCII), the report still writes its "Δ vs paper" rows (in UTF-8)."""
    scores = tmp_path / "scores" / "rules"
    scores.mkdir(parents=True)
    write_summary(summary_rows(), scores / "summary.csv")
    code = ("import sys; from evaluation.cobsat.config import load_config; from evaluation.cobsat.report import report; "
            "report(load_config(None, ['run.output_dir=\"' + sys.argv[1] + '\"', 'judge.model=\"rules\"']))")
    python_in_ascii_locale(code, str(tmp_path))
    folder = tmp_path / "report" / "rules"
    assert "| Δ vs paper | +0.000 |" in (folder / "cobsat.md").read_bytes().decode("utf-8")
    assert "2,Δ vs paper,1,Color-I,0.0000" in (folder / "cobsat.csv").read_bytes().decode("utf-8")
    report(load_config(None, [f'run.output_dir="{tmp_path}"', 'judge.model="rules"']))  # in this process too, for mutation testing


def test_the_charts_texts_are_where_the_layout_puts_them(tmp_path: Path):
    """The only dark pixels are the texts, drawn at their places (a title per panel, tick labels, group labels, legend
    labels cut to 28 characters) and the axis lines; worked out from the layout: plot from x 60 to 1180 and y
    panel top + 40 to panel bottom - 50, 11 groups of 1120 / 11 px, legend entries 190 px apart."""
    long_label = "a run label longer than twenty-eight characters"
    shot_tables = {6: [("ours", {1: 0.5}), ("ours, CLIP ViT-B/32", {1: 0.25})], 2: [(long_label, {2: 1.0})]}
    image = Image.open(chart(shot_tables, tmp_path / "c.png", "rules")).convert("RGB")
    expected = Image.new("RGB", image.size, "white")
    draw = ImageDraw.Draw(expected)
    names = [*(TASKS[t].name for t in (1, 3, 5, 7, 9, 2, 4, 6, 8, 10)), "avg"]
    for panel, (shot, rows) in enumerate(shot_tables.items()):
        top, bottom = panel * 360 + 40, (panel + 1) * 360 - 50
        draw.text((60, top - 32), f"CoBSAT {shot}-shot accuracy (judge: rules)", fill="black")
        for tick, text in ((0.0, "0.00"), (0.25, "0.25"), (0.5, "0.50"), (0.75, "0.75"), (1.0, "1.00")):
            draw.text((8, bottom - tick * (bottom - top) - 6), text, fill="black")
        for group, name in enumerate(names):
            draw.text((60 + group * 1120 / 11 + 1120 / 110, bottom + 6), name, fill="black")
        for entry, (label, _) in enumerate(rows):
            draw.text((60 + 10 + entry * 190 + 14, top - 18), label[:28], fill="black")
        draw.line([60, bottom, 1180, bottom], fill="black")

    def ink(picture: Image.Image) -> dict[tuple[int, int], int]:
        """Dark grey pixels (black text, antialiased) but the first series' grey (150, 150, 150)."""
        pixels = picture.load()
        return {(x, y): pixels[x, y][0] for x in range(picture.width) for y in range(picture.height)
                if pixels[x, y][0] == pixels[x, y][1] == pixels[x, y][2] < 200 and pixels[x, y][0] != 150}

    assert ink(image) == ink(expected)
    cut, longer = (Image.new("RGB", (400, 20), "white") for _ in range(2))
    ImageDraw.Draw(cut).text((0, 0), long_label[:28], fill="black")
    ImageDraw.Draw(longer).text((0, 0), long_label[:29], fill="black")
    assert len(ink(cut)) > 100 and ink(cut) != ink(longer)  # the texts show, and so does the cut
