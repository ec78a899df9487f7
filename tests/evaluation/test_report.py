"""``report`` from fixed judge summaries: the paper's layout, averages, the difference to the paper, CSV and chart."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from evaluation.cobsat.config import load_config
from evaluation.cobsat.judge import write_summary
from evaluation.cobsat.paper import PAPER, PAPER_ROW
from evaluation.cobsat.protocol import TASKS
from evaluation.cobsat.report import report

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
    assert "| Δ vs paper | +0.010 | +0.010 |" in text and "| Δ vs paper | +0.000 |" in text
    assert "| ours, CLIP ViT-B/32 | 0.500 |" in text
    assert "10000 samples over 10 task(s), 3 image(s) missing" in text
    six = text.split("## 6-shot")[1]
    assert "| ours | 0.500 | – | – | – | – | 0.250 | – | – | – | – | 0.375 |" in six and "paper" not in six
    assert "This run covers only some tasks" in six
    rows = list(csv.DictReader(table.open()))
    ours_4 = {r["task"]: float(r["accuracy"]) for r in rows if r["shot"] == "4" and r["row"] == "ours"}
    assert ours_4["1"] == 0.648 and abs(ours_4["avg"] - 0.4733) < 1e-4
    assert {r["row"] for r in rows if r["shot"] == "2"} == {"SEED-LLaMA", "Emu", "GILL", PAPER_ROW, "ours", "Δ vs paper",
                                                            "ours, CLIP ViT-B/32"}
    assert Image.open(chart).size == (1200, 3 * 360)
