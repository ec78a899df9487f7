"""The mutation score per file from mutmut's results (mutants/**/*.meta): killed / (killed + survived).

    python scripts/mutation_report.py        (scripts/mutation.sh runs it after mutmut)

Timeouts count as killed (the mutant hung a test), "no tests" as survived (nothing reached the mutated code).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "segfault"}


def main() -> None:
    rows, total = [], Counter()
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = Counter(status_by_exit_code[code] for code in codes.values())
        total.update(statuses)
        rows.append((str(meta.relative_to("mutants"))[:-5], statuses))
    if not rows:
        raise SystemExit('no mutation results: run "bash scripts/mutation.sh" first')
    print(f"{'file':32s} {'mutants':>7s} {'killed':>6s} {'survived':>8s} {'no tests':>8s} {'score':>6s}")
    for name, statuses in [*rows, ("all", total)]:
        killed = sum(statuses[s] for s in KILLED)
        survived = statuses["survived"] + statuses["no tests"]
        done = killed + survived
        score = f"{killed / done:.1%}" if done else "-"
        print(f"{name:32s} {sum(statuses.values()):7d} {killed:6d} {statuses['survived']:8d} {statuses['no tests']:8d} {score:>6s}")


if __name__ == "__main__":
    main()
