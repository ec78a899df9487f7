#!/usr/bin/env bash
# The main job: a real ComfyUI 0.3.75 with this pack runs a shipped workflow headless on the embedded default
# models (tiny RANDOM test models generated locally: the picture is noise and the text is gibberish; they prove
# the pipeline, not the quality) and writes the image and the VLM's text to demo_output/.
#   bash scripts/demo.sh [workflow name, default thinkdiff_lvlm_in_context]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$HERE/scripts/bootstrap.sh"
cd "$HERE"
exec "${THINKDIFF_DEV_DIR:-$HERE/.dev}/venv/bin/python" scripts/run_demo.py "$@"
