"""Python code run as on a machine whose locale is ASCII (a bare cluster node's C locale; Windows' cp1252 alike), where
a file opened without an encoding is read and written as ASCII."""

from __future__ import annotations

import os
import subprocess
import sys

from .paths import REPO

ASCII_LOCALE = {"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}  # no coercion to C.UTF-8, no UTF-8 mode


def python_in_ascii_locale(code: str, *args: str) -> str:
    """``python -c CODE ARGS`` from the repository under that locale; its standard output (it must succeed)."""
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, **ASCII_LOCALE},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout
