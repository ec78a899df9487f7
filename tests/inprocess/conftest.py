"""The ComfyUI end-to-end tests that need no server, run against ComfyUI's executor in this process.

Only for mutation testing (``scripts/mutation.sh`` sets THINKDIFF_INPROCESS=1): CI runs the same tests against real
server processes (tests/test_comfyui.py).
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.support.comfy_inprocess import ComfyInProcess, comfy_in_this_process
from tests.support.paths import DEV
from tests.support.tiny_comfy import make_tiny_base


def pytest_collection_modifyitems(config, items):
    if os.environ.get("THINKDIFF_INPROCESS") != "1":
        skip = pytest.mark.skip(reason="in-process copies of the server tests, for scripts/mutation.sh only")
        for item in items:
            if "inprocess" in item.nodeid:
                item.add_marker(skip)


def fresh_base() -> Path:
    """Outside pytest's numbered temporary folders: mutmut runs a pytest session per mutant in forks of one process, and
    pytest deletes all but the last three sessions' folders, the process's ComfyUI base among them."""
    base = DEV / "comfy-inprocess"
    shutil.rmtree(base, ignore_errors=True)
    return make_tiny_base(base)


@pytest.fixture(scope="session")
def comfy() -> ComfyInProcess:
    return comfy_in_this_process(fresh_base)
