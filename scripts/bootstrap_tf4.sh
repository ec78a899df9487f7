#!/usr/bin/env bash
# A test environment with transformers 4.x (ComfyUI's own floor is 4.50.3; many installs still run 4.5x), stacked on the
# ComfyUI 0.3.75 overlay (scripts/bootstrap.sh):
#   .dev/venv-tf4  own site-packages: transformers, tokenizers, huggingface_hub and diffusers (tests only) of that era,
#                  everything else from .dev/venv-comfyui-0.3.75 -> .dev/venv.
# Idempotent; THINKDIFF_TF4_VERSION picks another 4.x release (default: the floor in requirements.txt).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
BASE=$DEV/venv-comfyui-0.3.75
VENV=$DEV/venv-tf4
VERSION=${THINKDIFF_TF4_VERSION:-$(sed -nE 's/^transformers>=([0-9.]+).*/\1/p' "$HERE/requirements.txt")}
STAMP=$VENV/.thinkdiff-ready
WANT="$VERSION $(sha256sum "$HERE/scripts/bootstrap_tf4.sh" | cut -c1-16) $(cat "$BASE/.thinkdiff-ready" 2>/dev/null)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[bootstrap-tf4] building $VENV (transformers $VERSION over $BASE)"
  bash "$HERE/scripts/overlay_venv.sh" "$BASE" "$VENV"
  # diffusers (test-only) newer than 0.36 needs huggingface_hub 1.x, which transformers 4.x does not accept.
  "$VENV/bin/pip" install -q --no-deps "transformers==$VERSION" "tokenizers>=0.21,<0.22" "huggingface_hub>=0.34,<1.0" \
      "diffusers==0.36.0"
  "$VENV/bin/python" -c "import transformers, torch; assert transformers.__version__ == '$VERSION', transformers.__version__"
  echo "$WANT" > "$STAMP"
fi
echo "[bootstrap-tf4] ready: $("$VENV/bin/python" -c 'import transformers, tokenizers, huggingface_hub as h; print("transformers", transformers.__version__, "tokenizers", tokenizers.__version__, "huggingface_hub", h.__version__)')"
