#!/usr/bin/env bash
# The test suite on CPU with tiny models: builds .dev/ if needed (scripts/bootstrap.sh), then
#   1. ruff
#   2. everything (library, training, packaging, ComfyUI 0.33 server end to end, install + browser)
#   3. the ComfyUI side again on ComfyUI 0.3.75 (tests marked comfyui: server, end to end, install + browser)
#   4. library, training and ComfyUI end to end again with transformers 4.x (scripts/bootstrap_tf4.sh) on ComfyUI 0.3.75
#   5. the vLLM stage-A backend on vLLM's CPU build, against the transformers backend (scripts/bootstrap_vllm.sh)
# Each part prints its wall time. `bash scripts/test.sh [pytest args]` runs only part 2 with those arguments
# (THINKDIFF_COMFYUI=0.3.75 and .dev/venv-comfyui-0.3.75/bin/python for the old ComfyUI). THINKDIFF_TF4=0 skips part 4,
# THINKDIFF_VLLM=0 part 5.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
PYTEST=(-m pytest -p no:cacheprovider)
part() {  # part NAME COMMAND...: run, then report its time
  local name=$1 start=$SECONDS
  shift
  echo "=== $name"
  "$@"
  echo "=== $name: $((SECONDS - start)) s"
}
part "bootstrap" bash "$HERE/scripts/bootstrap.sh"
cd "$HERE"
part "ruff" "$DEV/venv/bin/python" -m ruff check .
if [ $# -gt 0 ]; then
  exec "$DEV/venv/bin/python" "${PYTEST[@]}" "$@"
fi
part "all tests, ComfyUI 0.33.0" env THINKDIFF_COMFYUI=0.33.0 "$DEV/venv/bin/python" "${PYTEST[@]}"
part "ComfyUI side, ComfyUI 0.3.75" env THINKDIFF_COMFYUI=0.3.75 "$DEV/venv-comfyui-0.3.75/bin/python" "${PYTEST[@]}" -m comfyui
if [ "${THINKDIFF_TF4:-1}" = 1 ]; then
  part "bootstrap transformers 4.x" bash "$HERE/scripts/bootstrap_tf4.sh"
  # Packaging, install/browser and doctor tests do not depend on the transformers version.
  part "library, training, ComfyUI end to end: transformers 4.x, ComfyUI 0.3.75" env THINKDIFF_COMFYUI=0.3.75 \
      "$DEV/venv-tf4/bin/python" "${PYTEST[@]}" -q --ignore=tests/test_install.py --ignore=tests/test_packaging.py \
      --ignore=tests/test_doctor.py
fi
if [ "${THINKDIFF_VLLM:-1}" = 1 ]; then
  part "bootstrap vLLM (CPU build)" bash "$HERE/scripts/bootstrap_vllm.sh"
  part "vLLM stage-A backend: parity with transformers, resume" "$DEV/venv-vllm/bin/python" "${PYTEST[@]}" -q \
      tests/training/test_vllm_parity.py tests/training/test_vllm_stage_a.py tests/training/test_vllm_phases.py \
      tests/training/test_distributed.py
fi
