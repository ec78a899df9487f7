#!/usr/bin/env bash
# The GPU check of the VLM's low-VRAM paths (scripts/gpu_check.py): one table, about 5 to 8 minutes on one GPU with a
# random Qwen2-VL-7B of real size; nothing is downloaded on the GPU machine.
#   bash scripts/gpu_check.sh --prepare   # here, with PyPI: ComfyUI 0.33.0 and the wheels a bare GPU image lacks
#                                         #   (comfy-aimdo, av, bitsandbytes cut to its CUDA 13 libraries) -> .gpu_check/
#   bash scripts/gpu_check.sh             # on the GPU machine, with .gpu_check/ beside the repo's files: installs the
#                                         #   wheels into /tmp, runs the check with python3, log -> $GPU_CHECK_LOG
#   bash scripts/gpu_check.sh --dry-run   # every step on the CPU with a tiny model, in .dev/ (the tests run this;
#                                         #   PYTHON picks another interpreter)
# The device tool: run(command="bash scripts/gpu_check.sh", carry=[".gpu_check"]); commit the log under docs/.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
KIT=$HERE/.gpu_check
LOG=${GPU_CHECK_LOG:-${OUT:-$HERE}/gpu_check.log}
cd "$HERE"

case "${1:-}" in
  --dry-run)
    exec "${PYTHON:-$DEV/venv/bin/python}" scripts/gpu_check.py --dry-run ;;
  --prepare)
    rm -rf "$KIT" && mkdir -p "$KIT/dl"
    cp "$HERE/../shared/vendor/comfyui-0.33.0.tar.gz" "$KIT/" 2>/dev/null \
      || tar -czf "$KIT/comfyui-0.33.0.tar.gz" -C "$DEV" --transform 's,^comfyui-0.33.0,ComfyUI,' \
             --exclude=__pycache__ comfyui-0.33.0
    # the GPU image's Python (3.12, torch 2.11+cu130) has everything else ComfyUI's model management imports
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$KIT/dl" comfy-aimdo==0.4.13 "av>=16" "bitsandbytes>=0.45"
    python3 scripts/trim_wheel.py "$KIT/dl"/bitsandbytes-*.whl "$KIT" 'libbitsandbytes_(cuda13|cpu)'
    mv "$KIT/dl"/comfy_aimdo-*.whl "$KIT/dl"/av-*.whl "$KIT/" && rm -rf "$KIT/dl"
    du -sh "$KIT" ;;
  "")
    [ -d "$KIT" ] || { echo "no $KIT: run 'bash scripts/gpu_check.sh --prepare' here first, then carry .gpu_check"; exit 2; }
    WORK=/tmp/thinkdiff-gpu-check
    mkdir -p "$WORK"
    [ -d "$WORK/ComfyUI" ] || tar -xzf "$KIT/comfyui-0.33.0.tar.gz" -C "$WORK"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$KIT"/*.whl
    export PYTHONPATH=$WORK/site COMFYUI_DIR=$WORK/ComfyUI PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOG"
    timeout 540 python3 scripts/gpu_check.py 2>&1 | tee -a "$LOG" ;;
  *)
    echo "usage: bash scripts/gpu_check.sh [--prepare | --dry-run]"; exit 2 ;;
esac
