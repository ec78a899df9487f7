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
# The library and ComfyUI end-to-end tests again with transformers 4.5x (scripts/bootstrap_tf4.sh); THINKDIFF_TF4=0 skips.
# Packaging, install/browser, doctor and training tests don't depend on the transformers version.
if [ "${THINKDIFF_TF4:-1}" = 1 ] && [ $# -eq 0 ]; then
  bash "$HERE/scripts/bootstrap_tf4.sh"
  "${THINKDIFF_DEV_DIR:-$HERE/.dev}/venv-tf4/bin/python" -m pytest -p no:cacheprovider -q --ignore=tests/training \
      --ignore=tests/test_install.py --ignore=tests/test_packaging.py --ignore=tests/test_doctor.py
fi
