#!/usr/bin/env bash
# A second test environment with transformers 4.5x (what many ComfyUI installs still have), built as a thin overlay:
#   .dev/venv-tf4  own site-packages: transformers 4.57, tokenizers 0.22, huggingface_hub 0.36, diffusers 0.36 (tests only)
#                  then everything else (torch, ComfyUI's requirements, pytest) from .dev/venv through a .pth file.
# Needs .dev/venv (scripts/bootstrap.sh). Idempotent; THINKDIFF_TF4_VERSION picks another 4.x release.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${THINKDIFF_DEV_DIR:-$HERE/.dev}
BASE=$DEV/venv
VENV=$DEV/venv-tf4
VERSION=${THINKDIFF_TF4_VERSION:-4.57.6}
STAMP=$VENV/.thinkdiff-ready
WANT="$VERSION $(sha256sum "$HERE/scripts/bootstrap_tf4.sh" | cut -c1-16) $(cat "$BASE/.thinkdiff-ready" 2>/dev/null)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[bootstrap-tf4] building $VENV (transformers $VERSION over $BASE)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # diffusers (test-only) newer than 0.36 needs huggingface_hub 1.x, which transformers 4.x does not accept.
  "$VENV/bin/pip" install -q --no-deps "transformers==$VERSION" "tokenizers>=0.22,<0.23" "huggingface_hub>=0.34,<1.0" \
      "diffusers==0.36.0"
  SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  BASE_SITE=$("$BASE/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  # addsitedir (not a bare path) so the base's own .pth files apply too; our site-packages stays first on sys.path.
  echo "import site; site.addsitedir('$BASE_SITE')" > "$SITE/zz_thinkdiff_base_venv.pth"
  "$VENV/bin/python" -c "import transformers, torch; assert transformers.__version__ == '$VERSION', transformers.__version__"
  echo "$WANT" > "$STAMP"
fi
echo "[bootstrap-tf4] ready: $("$VENV/bin/python" -c 'import transformers, tokenizers, huggingface_hub as h; print("transformers", transformers.__version__, "tokenizers", tokenizers.__version__, "huggingface_hub", h.__version__)')"
