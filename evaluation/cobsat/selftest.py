"""``selftest``: the whole chain (samples -> generate -> judge -> report) on the synthetic stand-in, without models.

The oracle generator draws the ground truth and must score 1.0 on Color-I and Color-II; the random generator
guesses uniformly and must score near chance (1/10 per question, 1/100 for both).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .config import load_config
from .generate import generate
from .judge import judge, read_summary
from .report import report
from .synthetic import write_prompt_list, write_standin

COLOUR_TASKS = (1, 2)
CHANCE = {"correct": 0.01, "check_detail": 0.1, "check_obj": 0.1}


def run_generator(out: Path, generator: str, dataset: Path, prompt_list: Path, shots: list[int], samples_per_task: int
                  ) -> list[dict]:
    """Generate, judge (rule judge) and report one synthetic run; returns the judge's summary rows."""
    config = load_config(None, [f"run.output_dir={json.dumps(str(out / generator))}", f"run.tasks={list(COLOUR_TASKS)}",
                                f"run.shots={shots}", f"run.samples_per_task={samples_per_task}",
                                f"data.prompt_list={json.dumps(str(prompt_list))}", f"data.dataset_root={json.dumps(str(dataset))}",
                                f'generate.backend="{generator}"', "generate.batch_size=50", 'judge.model="rules"',
                                f'report.label="{generator} generator (synthetic)"'])
    generate(config)
    summary = read_summary(judge(config))
    for path in report(config):
        print(f"wrote {path}")
    return summary


def near_chance(value: float, chance: float, samples: int) -> bool:
    """Within five binomial standard deviations of chance."""
    return abs(value - chance) <= 5 * math.sqrt(chance * (1 - chance) / samples)


def selftest(out: Path, samples_per_task: int = 1000, shots: tuple[int, ...] = (2, 4)) -> bool:
    """Run both generators; print each (shot, task) and whether the checks hold."""
    dataset = write_standin(out / "cobsat" / "datasets")
    prompt_list = write_prompt_list(out / "cobsat" / "prompts_list_synthetic.json")
    ok = True
    for generator in ("oracle", "random"):
        for row in run_generator(out, generator, dataset, prompt_list, list(shots), samples_per_task):
            if generator == "oracle":
                passed = all(row[metric] == 1.0 for metric in CHANCE)
            else:
                passed = all(near_chance(row[metric], chance, int(row["samples"])) for metric, chance in CHANCE.items())
            ok &= passed
            print(f"{generator:6s} {row['shot']}-shot {row['task_name']:9s} accuracy {row['correct']:.3f} "
                  f"(detail {row['check_detail']:.3f}, object {row['check_obj']:.3f}) {'ok' if passed else 'FAILED'}")
    print("self-test passed" if ok else "self-test FAILED")
    return ok
