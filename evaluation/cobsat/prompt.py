"""ThinkDiff's CoBSAT prompt (thinkdiff-reference.md 7.2), written with this pack's ``<image>`` placeholders.

The user turn is the instruction, then ``Word k: <t_k>, `` and the k-th demo image for each demo, blank lines between
them, and ``Word N+1: <t_query>, `` last; ``t`` is a CoBSAT text input without its trailing ``": "``. Qwen2-VL renders
adjacent text parts as one, and the images get ``Picture k: `` labels (``add_vision_id``).
"""

from __future__ import annotations

from thinkdiff.prompts import IMAGE_PLACEHOLDER

from .samples import Sample

INSTRUCTION = (
    "I give you several words and pictures. First, please analyse what the next picture is. Then give me a detailed "
    "diffusion prompt to describe the next picture. Please only provide me the detailed prompt and start the answer "
    "with 'Create an image'.\n\n")


def thinkdiff_prompt(sample: Sample, instruction: str = INSTRUCTION) -> str:
    words = [text[:-2] for text in sample.text_inputs]
    demos = [f"Word {k}: {w}, {IMAGE_PLACEHOLDER}" for k, w in enumerate(words[:-1], start=1)]
    return instruction + "\n\n".join([*demos, f"Word {len(words)}: {words[-1]}, "])
