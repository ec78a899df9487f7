"""The loss log (``metrics.csv``) and its curve (``loss.png``, drawn with PIL: no plotting dependency)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw

COLUMNS = ("step", "loss", "lr", "samples", "skipped", "elapsed_s")
PLOT_SIZE = (800, 480)
MARGIN = (70, 30, 20, 50)  # left, top, right, bottom


class MetricsLog:
    """Appends rows to ``metrics.csv``; on resume, rows after the checkpoint's step are dropped first."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        rows = [r for r in read_metrics(path) if int(r["step"]) <= resume_step] if path.is_file() else []
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, **row: float) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def plot_loss(csv_path: Path, png_path: Path, title: str = "training loss") -> Path:
    """Draw loss against step from ``metrics.csv``."""
    rows = read_metrics(csv_path)
    points = [(int(r["step"]), float(r["loss"])) for r in rows if r["loss"] and math.isfinite(float(r["loss"]))]
    image = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN[0], MARGIN[1], PLOT_SIZE[0] - MARGIN[2], PLOT_SIZE[1] - MARGIN[3]
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, 8), title, fill="black")
    draw.text(((left + right) // 2 - 12, bottom + 28), "step", fill="black")
    if points:
        steps, losses = zip(*points, strict=True)
        x0, x1 = min(steps), max(max(steps), min(steps) + 1)
        y0, y1 = min(losses), max(max(losses), min(losses) + 1e-6)

        def xy(step: float, loss: float) -> tuple[float, float]:
            return left + (step - x0) / (x1 - x0) * (right - left), bottom - (loss - y0) / (y1 - y0) * (bottom - top)

        for value in _ticks(y0, y1):
            y = xy(x0, value)[1]
            draw.line([left - 4, y, left, y], fill="black")
            draw.text((4, y - 6), f"{value:.3f}", fill="black")
        for value in _ticks(x0, x1):
            x = xy(value, y0)[0]
            draw.line([x, bottom, x, bottom + 4], fill="black")
            draw.text((x - 10, bottom + 8), f"{value:.0f}", fill="black")
        if len(points) > 1:
            draw.line([xy(s, v) for s, v in points], fill=(30, 90, 200), width=2)
        else:
            x, y = xy(*points[0])
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 90, 200))
    png_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(png_path)
    return png_path
