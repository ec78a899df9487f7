"""``python -m evaluation``'s parser and steps in process: the config each step gets (file, ``--set``, the sample options),
the line it prints, and errors as exit code 1 with ``error: ...`` on stderr. The steps themselves are stand-ins here
(test_selftest.py runs the real ones through the command line)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import evaluation.__main__ as entry
import evaluation.cobsat.generate
import evaluation.cobsat.judge
import evaluation.cobsat.report
import evaluation.cobsat.selftest
from evaluation.__main__ import main, sample_overrides
from evaluation.cobsat.config import EvalConfig
from evaluation.cobsat.samples import read_samples


def options(prompt_list=None, tasks=None, shots=None, samples_per_task=None) -> argparse.Namespace:
    return argparse.Namespace(prompt_list=prompt_list, tasks=tasks, shots=shots, samples_per_task=samples_per_task)


def test_sample_options_become_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    listed = tmp_path.resolve() / "lists" / 'the "default" list.json'
    assert sample_overrides(options(Path('lists/the "default" list.json'), "1-3,7", "4", 5)) == [
        'data.prompt_list="' + str(listed).replace('"', '\\"') + '"', "run.tasks=[1, 2, 3, 7]", "run.shots=[4]",
        "run.samples_per_task=5"]
    assert sample_overrides(options()) == []
    assert sample_overrides(options(shots="2,4")) == ["run.shots=[2, 4]"]
    assert sample_overrides(options(tasks="10", samples_per_task=1)) == ["run.tasks=[10]", "run.samples_per_task=1"]


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, EvalConfig]]:
    """generate, judge and report as stand-ins that keep the config they get and return made-up paths."""
    calls: list[tuple[str, EvalConfig]] = []

    def stand_in(name: str, result):
        return lambda config: calls.append((name, config)) or result

    monkeypatch.setattr(evaluation.cobsat.generate, "generate", stand_in("generate", Path("/run/images")))
    monkeypatch.setattr(evaluation.cobsat.judge, "judge", stand_in("judge", Path("/run/scores/rules/summary.csv")))
    monkeypatch.setattr(evaluation.cobsat.report, "report", stand_in("report", [Path("/r/cobsat.md"), Path("/r/cobsat.csv"),
                                                                                Path("/r/cobsat.png")]))
    return calls


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    path = tmp_path / "configs" / "run.toml"
    path.parent.mkdir()
    path.write_text('[run]\noutput_dir = "out"\ntasks = [1]\nshots = [2]\nseed = 5\n[generate]\nbackend = "oracle"\n')
    return path


@pytest.mark.parametrize(("step", "printed"), [("generate", "images in /run/images\n"),
                                               ("judge", "wrote /run/scores/rules/summary.csv\n"),
                                               ("report", "wrote /r/cobsat.md, /r/cobsat.csv, /r/cobsat.png\n")])
def test_each_step_gets_the_config_and_prints_its_output(step: str, printed: str, steps, run_file: Path, capsys):
    assert main(["cobsat", step, "--config", str(run_file), "--set", "run.seed=9", "--set", 'judge.model="rules"']) == 0
    assert capsys.readouterr() == (printed, "")
    ((name, config),) = steps
    assert name == step and config.output_dir == run_file.parent / "out"  # relative to the config file
    assert (config.run.seed, config.judge.model, config.run.tasks, config.generate.backend) == (9, "rules", [1], "oracle")


def test_the_sample_options_override_the_config_and_set(steps, run_file: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.json").write_text("[]")
    assert main(["cobsat", "generate", "--config", str(run_file), "--set", "run.tasks=[3]", "--tasks", "2,5", "--shots", "4",
                 "--samples-per-task", "7", "--prompt-list", "list.json"]) == 0
    ((_, config),) = steps
    run = config.run
    assert (run.tasks, run.shots, run.samples_per_task, run.seed) == ([2, 5], [4], 7, 5)
    assert config.data.prompt_list == str(tmp_path.resolve() / "list.json")  # relative to the working directory
    assert main(["cobsat", "judge", "--tasks", "3"]) == 0  # no config file: the defaults and the options
    (_, config) = steps[1]
    assert (config.run.tasks, config.run.shots, config.base_dir) == ([3], [2, 4], Path.cwd())


def test_samples_are_written_where_asked(tmp_path: Path, prompt_list: Path, run_file: Path, capsys):
    config = ["--config", str(run_file), "--prompt-list", str(prompt_list), "--samples-per-task", "3"]
    assert main(["cobsat", "samples", *config]) == 0
    written = run_file.parent / "out" / "samples.jsonl"
    assert capsys.readouterr() == (f"wrote 3 samples to {written}\n", "")
    assert [(s.task, s.shot, s.index) for s in read_samples(written)] == [(1, 2, 0), (1, 2, 1), (1, 2, 2)]
    out = tmp_path / "elsewhere" / "chosen.jsonl"
    assert main(["cobsat", "samples", *config, "--shots", "2,4", "--out", str(out)]) == 0
    assert capsys.readouterr() == (f"wrote 6 samples to {out}\n", "")
    assert len(read_samples(out)) == 6


def test_errors_exit_with_one_and_say_why(run_file: Path, tmp_path: Path, capsys):
    assert main(["cobsat", "samples", "--config", str(run_file)]) == 1
    assert capsys.readouterr() == ("", "error: give --prompt-list (CoBSAT's load_datasets/prompts_list_default.json) or "
                                       "[data] prompt_list\n")
    assert main(["cobsat", "report", "--config", str(run_file), "--tasks", "11"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["cobsat", "generate", "--config", str(tmp_path / "missing.toml")]) == 1
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.startswith("error: ") and "missing.toml" in printed.err


@pytest.fixture
def selftests(monkeypatch: pytest.MonkeyPatch) -> list:
    """The self-test as a stand-in: keeps its arguments, passes while ``passes[0]``."""
    calls: list = [True]
    monkeypatch.setattr(evaluation.cobsat.selftest, "selftest", lambda out, samples: calls.append((out, samples)) or calls[0])
    return calls


def test_the_selftest_needs_no_config(selftests: list, tmp_path: Path, capsys):
    assert main(["cobsat", "selftest", "--config", str(tmp_path / "missing.toml")]) == 0
    assert main(["cobsat", "selftest", "--out", "runs/check", "--samples-per-task", "20", "--tasks", "1"]) == 0
    assert selftests[1:] == [(Path("cobsat_selftest"), 1000), (Path("runs/check"), 20)]
    assert capsys.readouterr() == ("", "")
    selftests[0] = False
    assert main(["cobsat", "selftest"]) == 1
    assert capsys.readouterr() == ("", "error: the self-test failed (see above)\n")


def test_the_help_lists_the_steps_and_options(capsys, monkeypatch: pytest.MonkeyPatch):
    """The help page as docs/evaluation.md uses it: ``python -m evaluation cobsat STEP``, ``--config``, ``--set``, the
    sample options, ``--out``."""
    monkeypatch.setenv("COLUMNS", "300")  # the usage on one line
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m evaluation [-h] [--config CONFIG] [--set SECTION.KEY=VALUE] [--prompt-list "
                           "PROMPT_LIST] [--tasks TASKS] [--shots SHOTS] [--samples-per-task SAMPLES_PER_TASK] [--out OUT] "
                           "{cobsat} {samples,generate,judge,report,selftest}\n")
    assert entry.__doc__ in text  # the steps' list as written, not re-wrapped
    words = " ".join(text.split())
    for option, meaning in (
            ("--config CONFIG", "the run's TOML file"),
            ("--set SECTION.KEY=VALUE", "override a config value (TOML syntax for the value), repeatable"),
            ("--prompt-list PROMPT_LIST", "CoBSAT's load_datasets/prompts_list_default.json ([data] prompt_list)"),
            ("--tasks TASKS", "task ids, e.g. 1-10 or 1,2 ([run] tasks)"),
            ("--shots SHOTS", "shot counts, e.g. 2,4 ([run] shots)"),
            ("--samples-per-task SAMPLES_PER_TASK", "prompt-list entries per task, at most 1000 ([run] samples_per_task)"),
            ("--out OUT", "samples: the .jsonl to write; selftest: its folder (default cobsat_selftest)")):
        assert re.search(re.escape(f"{option} {meaning}") + "(?= --|$)", words), option  # up to the next option
    for argv, wrong in ((["vqa", "judge"], "argument benchmark: invalid choice: 'vqa'"),
                        (["cobsat", "train"], "argument step: invalid choice: 'train'"),
                        (["cobsat", "judge", "--samples-per-task", "ten"], "argument --samples-per-task: invalid int value")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and wrong in capsys.readouterr().err
    assert entry.STEPS == ("samples", "generate", "judge", "report", "selftest")
