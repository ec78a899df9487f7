"""The mutation scores per module from mutmut's results, with the survivors judged equivalent taken out.

    python scripts/mutation_report.py MUTANTS_DIR...     (scripts/mutation.sh runs it with both runs' mutants/ folders)

A module's score is killed / (mutants run - equivalent); the goal is 95 % in every module. Timeouts count as killed
(the mutant hung a test), "no tests" as surviving (nothing reached the mutated code). Equivalent mutants are listed by
name in docs/development.md ("Equivalent mutants": ``- `NAME`: why``); listed names that no longer survive are shown, so
the list stays true. Then every other survivor, to kill with a test or to judge equivalent.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "segfault", "caught by type check"}
GOAL = 0.95
DOCS = Path(__file__).resolve().parents[1] / "docs" / "development.md"
EQUIVALENT_ENTRY = re.compile(r"^- `([^`]+__mutmut_\d+)`: ", re.MULTILINE)


def equivalent_mutants(docs: Path = DOCS) -> set[str]:
    """The names listed under the "Equivalent mutants" heading of the development notes."""
    text = docs.read_text(encoding="utf-8")
    section = text.split("### Equivalent mutants", 1)[1].split("\n#", 1)[0] if "### Equivalent mutants" in text else ""
    return set(EQUIVALENT_ENTRY.findall(section))


def module_of(name: str) -> str:
    """``thinkdiff/manifest.py`` of ``thinkdiff.manifest.x_read_manifest__mutmut_8`` (methods: ``.xǁClassǁname``)."""
    return re.split(r"\.xǁ|\.x_", name, maxsplit=1)[0].replace(".", "/") + ".py"


def statuses(folders: list[Path]) -> dict[str, dict[str, str]]:
    """Each module's mutants (by name) and their status, from the ``*.py.meta`` files mutmut writes."""
    modules = {}
    for folder in folders:
        for meta in sorted(folder.rglob("*.py.meta")):
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            modules[str(meta.relative_to(folder))[:-5]] = {name: status_by_exit_code[code] for name, code in codes.items()}
    return modules


def main(folders: list[Path]) -> None:
    modules = statuses([f for f in folders if f.is_dir()])
    if not modules:
        raise SystemExit('no mutation results: run "bash scripts/mutation.sh" (and "bash scripts/mutation.sh vllm") first')
    equivalent, survivors = equivalent_mutants(), []
    print(f"{'module':40s} {'mutants':>7s} {'run':>6s} {'killed':>6s} {'equiv.':>6s} {'survived':>8s} {'no tests':>8s} {'score':>7s}")
    total: Counter[str] = Counter()
    for module, mutants in modules.items():
        counts = Counter(mutants.values())
        ran = sum(n for status, n in counts.items() if status != "not checked")
        killed = sum(counts[s] for s in KILLED)
        judged = {name for name, status in mutants.items() if name in equivalent and status in ("survived", "no tests")}
        survivors += [(name, status) for name, status in mutants.items() if status in ("survived", "no tests") and name not in judged]
        row = Counter(mutants=len(mutants), run=ran, killed=killed, equivalent=len(judged),
                      survived=counts["survived"] - sum(mutants[n] == "survived" for n in judged),
                      no_tests=counts["no tests"] - sum(mutants[n] == "no tests" for n in judged))
        total.update(row)
        print_row(module, row)
    print_row("all", total)
    stale = sorted(name for name in equivalent if module_of(name) in modules
                   and modules[module_of(name)].get(name) not in ("survived", "no tests", "not checked"))
    if stale:
        print("\nlisted as equivalent but killed or unknown (remove from docs/development.md):", *stale, sep="\n  ")
    if survivors:
        print(f"\n{len(survivors)} survivor(s) to kill with a test or judge equivalent (mutmut show NAME):",
              *(f"{name} ({status})" for name, status in survivors), sep="\n  ")


def print_row(module: str, row: Counter[str]) -> None:
    considered = row["run"] - row["equivalent"]
    score = row["killed"] / considered if considered else None
    mark = "-" if score is None else f"{score:.1%}" + (" " if score >= GOAL else "!")
    print(f"{module:40s} {row['mutants']:7d} {row['run']:6d} {row['killed']:6d} {row['equivalent']:6d} {row['survived']:8d} "
          f"{row['no_tests']:8d} {mark:>7s}")


if __name__ == "__main__":
    main([Path(arg) for arg in sys.argv[1:]] or [Path("mutants")])
