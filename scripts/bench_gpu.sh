#!/usr/bin/env bash
# GPU benchmark run (random real-size Qwen2-VL, no downloads): encode vs bare generate, time and peak memory.
# Needs python3 with torch (CUDA), transformers, torchvision, pillow, and the Qwen2 tokenizer at
# .dev/ComfyUI/comfy/text_encoders/qwen25_tokenizer (scripts/bootstrap.sh puts it there).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 scripts/bench_encode.py --device cuda --dtype bf16 --width 7b --repeats 3
python3 scripts/bench_encode.py --device cuda --dtype bf16 --width 2b --repeats 3
python3 scripts/bench_encode.py --device cuda --dtype bf16 --width 7b --repeats 3 --tokens 256 --images 4
