"""ThinkDiff: vision-language reasoning as diffusion conditioning.

The library has no ComfyUI dependency: ``thinkdiff.aligner`` (the projector), ``thinkdiff.aligner_files``
(weights I/O and release conversion), ``thinkdiff.vlm`` (Qwen2-VL features of generated tokens),
``thinkdiff.prompts`` (the reference chat format) and ``thinkdiff.images`` (image preparation).
"""

__version__ = "0.2.0"
