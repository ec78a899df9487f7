#!/usr/bin/env bash
# The main job: a real ComfyUI (0.33, the current release; 0.3.75 from PyPI when the 0.33 tree cannot be had) with this
# pack runs a shipped workflow headless on the embedded default models (tiny RANDOM test models generated locally: the
# picture is noise and the text is gibberish; they prove the pipeline, not the quality) and writes its output and the
# VLM's text to demo_output/.
#   bash scripts/demo.sh [workflow name, default thinkdiff_lvlm_in_context]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
THINKDIFF_NEED_033=0 bash "$HERE/scripts/bootstrap.sh"
if [ -f "$DEV/comfyui-0.33.0/main.py" ]; then export THINKDIFF_COMFYUI=0.33.0; else export THINKDIFF_COMFYUI=0.3.75; fi
cd "$HERE"
exec "$DEV/venv/bin/python" scripts/run_demo.py "$@"
