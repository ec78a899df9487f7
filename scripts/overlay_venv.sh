#!/usr/bin/env bash
# A thin virtual environment over another one:  bash scripts/overlay_venv.sh BASE_VENV TARGET_VENV
# Packages installed into TARGET shadow BASE's; everything else (torch, ComfyUI's requirements, pytest) comes from BASE
# through a .pth file. site.addsitedir (not a bare path) applies BASE's own .pth files too, so overlays can be stacked.
set -euo pipefail
BASE=$1
TARGET=$2
rm -rf "$TARGET"
python3 -m venv "$TARGET"
SITE=$("$TARGET/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
BASE_SITE=$("$BASE/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import site; site.addsitedir('$BASE_SITE')" > "$SITE/zz_thinkdiff_base_venv.pth"
