"""Socket types of the ThinkDiff nodes."""

from comfy_api.latest import io

VLM = io.Custom("THINKDIFF_VLM")
ALIGNER = io.Custom("THINKDIFF_ALIGNER")
FEATURES = io.Custom("THINKDIFF_FEATURES")
CATEGORY = "ThinkDiff"
IMAGE_TOKENS = io.Custom("THINKDIFF_IMAGE_TOKENS")
VISION = io.Custom("THINKDIFF_VISION")
