"""Offline benchmarks of ThinkDiff (not shipped to the Comfy Registry): ``python -m evaluation cobsat <step>``.

Depends on the library (``thinkdiff/``), transformers, diffusers and Accelerate; never on the ComfyUI nodes, which
the ``comfyui`` backend reaches over a running server's HTTP API.
"""
