"""``report``: the paper's table layout (10 tasks + average per shot count) beside the paper's rows and baselines.

Writes ``OUTPUT_DIR/report/JUDGE/cobsat.md``, ``cobsat.csv`` (one row per shot, row label and task) and
``cobsat.png`` (grouped bars, drawn with PIL). A row's average is over the tasks it has; a run of fewer than
ten tasks says so.
"""

from __future__ import annotations

import csv
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .config import EvalConfig
from .judge import judge_name, read_summary
from .paper import PAPER, PAPER_ROW
from .protocol import PAPER_ORDER, TASKS

Row = tuple[str, dict[int, float]]
DELTA_ROW = "Δ vs paper"
SERIES_COLOURS = ((150, 150, 150), (190, 160, 100), (120, 170, 200), (40, 90, 200), (220, 80, 40), (60, 160, 90))
PANEL = (1200, 360)
MARGIN = (60, 40, 20, 50)  # left, top, right, bottom


def average(values: dict[int, float]) -> float:
    return sum(values.values()) / len(values)


def tables(summary: list[dict[str, Any]], label: str) -> dict[int, list[Row]]:
    """Per shot count: the paper's rows (when the paper has this shot count), this run, its difference to the paper
    and, when measured, this run's CLIP accuracy."""
    out: dict[int, list[Row]] = {}
    for shot in sorted({row["shot"] for row in summary}):
        mine = [row for row in summary if row["shot"] == shot]
        rows = list(PAPER.get(shot, {}).items())
        ours = {row["task"]: row["correct"] for row in mine}
        rows.append((label, ours))
        if shot in PAPER:
            rows.append((DELTA_ROW, {task: value - PAPER[shot][PAPER_ROW][task] for task, value in ours.items()}))
        if all("clip_correct" in row for row in mine):
            rows.append((f"{label}, CLIP ViT-B/32", {row["task"]: row["clip_correct"] for row in mine}))
        out[shot] = rows
    return out


def _cell(value: float | None, signed: bool) -> str:
    """Three decimals rounded half up, as the paper's tables (GILL's 4-shot average 0.0575 is 0.058)."""
    if value is None:
        return "–"
    rounded = Decimal(repr(round(value, 6))).quantize(Decimal("0.001"), ROUND_HALF_UP)
    return f"{rounded:+.3f}" if signed else f"{rounded:.3f}"


def markdown(shot_tables: dict[int, list[Row]], judge: str, summary: list[dict[str, Any]]) -> str:
    header = "| | " + " | ".join(TASKS[t].name for t in PAPER_ORDER) + " | avg |"
    lines = [f"# CoBSAT accuracy (judge: {judge})", "",
             "Accuracy = both questions right (the paper's metric). Paper rows: arXiv 2502.10458 Tables 1 (2-shot) and 2 "
             "(4-shot)."]
    for shot, rows in shot_tables.items():
        mine = [row for row in summary if row["shot"] == shot]
        missing = sum(int(row["missing_images"]) for row in mine)
        unjudged = sum(int(row["samples"]) - int(row["judged"]) for row in mine)
        lines += ["", f"## {shot}-shot", "",
                  f"{sum(int(row['samples']) for row in mine)} samples over {len(mine)} task(s), {missing} image(s) missing"
                  f"{f', {unjudged} not judged' if unjudged else ''} (counted wrong).", ""]
        if len(mine) < len(TASKS):
            lines += ["This run covers only some tasks; its average is over those.", ""]
        lines += [header, "|---" * (len(PAPER_ORDER) + 2) + "|"]
        for label, values in rows:
            signed = label == DELTA_ROW
            cells = [_cell(values.get(t), signed) for t in PAPER_ORDER]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {_cell(average(values) if values else None, signed)} |")
    return "\n".join(lines) + "\n"


def write_csv(shot_tables: dict[int, list[Row]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["shot", "row", "task", "task_name", "accuracy"])
        for shot, rows in shot_tables.items():
            for label, values in rows:
                writer.writerows([shot, label, t, TASKS[t].name, f"{values[t]:.4f}"] for t in PAPER_ORDER if t in values)
                writer.writerow([shot, label, "avg", "average", f"{average(values):.4f}"])
    return path


def chart(shot_tables: dict[int, list[Row]], path: Path, judge: str) -> Path:
    """Grouped bars: one panel per shot count, one group per task (and the average), one bar per row."""
    width, panel_height = PANEL
    image = Image.new("RGB", (width, panel_height * len(shot_tables)), "white")
    draw = ImageDraw.Draw(image)
    groups = [*PAPER_ORDER, "avg"]
    for panel, (shot, rows) in enumerate(shot_tables.items()):
        series = [(label, values) for label, values in rows if label != DELTA_ROW]
        top, left = panel * panel_height + MARGIN[1], MARGIN[0]
        bottom, right = (panel + 1) * panel_height - MARGIN[3], width - MARGIN[2]
        draw.text((left, top - 32), f"CoBSAT {shot}-shot accuracy (judge: {judge})", fill="black")
        for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
            y = bottom - tick * (bottom - top)
            draw.line([left, y, right, y], fill=(225, 225, 225))
            draw.text((8, y - 6), f"{tick:.2f}", fill="black")
        group_width = (right - left) / len(groups)
        bar = group_width * 0.8 / len(series)
        for g, task in enumerate(groups):
            x0 = left + g * group_width + group_width * 0.1
            draw.text((x0, bottom + 6), "avg" if task == "avg" else TASKS[task].name, fill="black")
            for s, (_, values) in enumerate(series):
                value = average(values) if task == "avg" and values else values.get(task)
                if value is not None:
                    draw.rectangle([x0 + s * bar, bottom - max(value, 0) * (bottom - top), x0 + (s + 1) * bar - 1, bottom],
                                   fill=SERIES_COLOURS[s % len(SERIES_COLOURS)])
        for s, (label, _) in enumerate(series):
            x = left + 10 + s * 190
            draw.rectangle([x, top - 16, x + 10, top - 6], fill=SERIES_COLOURS[s % len(SERIES_COLOURS)])
            draw.text((x + 14, top - 18), label[:28], fill="black")
        draw.line([left, bottom, right, bottom], fill="black")
    image.save(path)
    return path


def report(config: EvalConfig) -> list[Path]:
    """Markdown, CSV and PNG from the judge's summary; returns the three files."""
    judge = judge_name(config)
    summary = read_summary(config.output_dir / "scores" / judge / "summary.csv")
    shot_tables = tables(summary, config.report.label)
    folder = config.output_dir / "report" / judge
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cobsat.md").write_text(markdown(shot_tables, judge, summary), encoding="utf-8")
    return [folder / "cobsat.md", write_csv(shot_tables, folder / "cobsat.csv"), chart(shot_tables, folder / "cobsat.png", judge)]
