"""The whole mutation run (pyproject.toml's ``[tool.mutmut]``) selects every test that runs the pack's code in the test
process: a test file left out would let its modules' mutants survive unseen. The ones left out run the code only in
other processes (a ComfyUI server, an installed copy, a shell script) or read no module's behaviour."""

from __future__ import annotations

from tests.support.paths import REPO
from thinkdiff.run_config import tomllib

OUT_OF_PROCESS = {
    "tests/test_comfyui.py": "a ComfyUI server process (its value tests run in process from tests/inprocess)",
    "tests/test_t5_models.py": "a ComfyUI server process",
    "tests/test_install.py": "an installed copy in a ComfyUI server process",
    "tests/test_packaging.py": "built distributions",
    "tests/test_gpu_check.py": "scripts/gpu_check.sh in a subprocess",
    "tests/test_import_graph.py": "the modules' import statements, read with ast",
    "tests/test_mutation_config.py": "pyproject.toml",
}


def test_every_in_process_test_file_is_selected():
    selected = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"][
        "pytest_add_cli_args_test_selection"]
    files = {path.relative_to(REPO).as_posix() for path in (REPO / "tests").glob("test_*.py")}
    assert files - set(selected) == set(OUT_OF_PROCESS)
    assert not set(selected) & set(OUT_OF_PROCESS)
    assert all((REPO / entry).exists() for entry in selected)
