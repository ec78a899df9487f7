"""Where the development environment lives (see scripts/bootstrap.sh) and which ComfyUI the tests run.

``THINKDIFF_COMFYUI`` picks the ComfyUI version (``0.33.0``, the default, or ``0.3.75``); ``COMFYUI_DIR`` points at any
other ComfyUI tree.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEV = Path(os.environ.get("THINKDIFF_DEV_DIR", REPO / ".dev"))
SUPPORTED_COMFYUI = ("0.3.75", "0.33.0")
COMFYUI_VERSION = os.environ.get("THINKDIFF_COMFYUI", SUPPORTED_COMFYUI[-1])
COMFYUI = Path(os.environ.get("COMFYUI_DIR", DEV / f"comfyui-{COMFYUI_VERSION}"))
QWEN_TOKENIZER = COMFYUI / "comfy" / "text_encoders" / "qwen25_tokenizer"
T5_TOKENIZER = COMFYUI / "comfy" / "text_encoders" / "t5_tokenizer"
CLIP_TOKENIZER = COMFYUI / "comfy" / "sd1_tokenizer"
