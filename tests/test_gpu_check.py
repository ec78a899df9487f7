"""scripts/gpu_check.sh's dry run: every step of the GPU check (the loader's patcher per weight format, a think through
ComfyUI's memory manager, Cancel, unload, the streamed think) on the CPU with a tiny model, so that the one run a GPU
machine gets does not fail on a script error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import REPO
from tests.support.tiny_models import TINY_64
from thinkdiff.weight_formats import WEIGHT_FORMATS, is_bitsandbytes

GB = 10**9
COLUMNS = ["weights", "stored GB", "peak GB", "think s", "ms/tok", "bound ms/tok", "unload MB", "streamed (6 GB free)",
           "tokens after Cancel"]


@pytest.fixture(scope="module")
def table() -> dict[str, dict[str, str]]:
    run = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=REPO, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("|")]
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == COLUMNS
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(COLUMNS, row, strict=False)) for row in rows}  # a failed format: its message, then blanks


def bitsandbytes_runs() -> bool:
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5  # 4.x refuses bitsandbytes on a CPU


@pytest.mark.parametrize("weights", WEIGHT_FORMATS)
def test_every_format_thinks_cancels_and_unloads(table, weights):
    row = table[weights]
    if is_bitsandbytes(weights) and not bitsandbytes_runs():
        assert "cannot run on this machine" in row["stored GB"]  # the loader's own message, in the table
        return
    assert float(row["stored GB"]) == pytest.approx(TINY_64.weight_bytes(weights) / GB, rel=0.01)  # bf16, as loaded
    assert float(row["think s"]) > 0 and float(row["ms/tok"]) > 0
    assert row["tokens after Cancel"].split()[0] in ("0", "1")  # Cancel stops the think within one token
    assert row["peak GB"] == row["unload MB"] == row["bound ms/tok"] == "-"  # no GPU memory to read on the CPU
    if is_bitsandbytes(weights):
        assert row["streamed (6 GB free)"] == "-"  # bitsandbytes models cannot stream
    else:
        assert row["streamed (6 GB free)"].endswith("GB loaded"), row["streamed (6 GB free)"]
