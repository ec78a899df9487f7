"""Where the development environment lives (see scripts/bootstrap.sh)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEV = Path(os.environ.get("THINKDIFF_DEV_DIR", REPO / ".dev"))
COMFYUI = Path(os.environ.get("COMFYUI_DIR", DEV / "ComfyUI"))
QWEN_TOKENIZER = COMFYUI / "comfy" / "text_encoders" / "qwen25_tokenizer"
T5_TOKENIZER = COMFYUI / "comfy" / "text_encoders" / "t5_tokenizer"
CLIP_TOKENIZER = COMFYUI / "comfy" / "sd1_tokenizer"
