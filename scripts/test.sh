#!/usr/bin/env bash
# The test suite: builds .dev/ if needed (scripts/bootstrap.sh), then lint and pytest on CPU with tiny models.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$HERE/scripts/bootstrap.sh"
PY=${THINKDIFF_DEV_DIR:-$HERE/.dev}/venv/bin/python
cd "$HERE"
"$PY" -m ruff check .
"$PY" -m pytest -p no:cacheprovider "$@"
