"""Offline training of ThinkDiff aligners (LVLM and CLIP variants) in this pack's file format.

Depends on the ``thinkdiff`` library (never on ComfyUI). Modules: ``config`` (TOML + overrides),
``pairs`` (image-text data), ``precompute`` (LVLM stage A: ``stage_a_plan`` and the backends
``transformers_stage_a``, ``vllm_stage_a``) + ``feature_store``, ``masking`` and
``objectives`` (the proxy tasks), ``models`` (frozen T5 / vision tower, aligner init), ``optim``,
``trainer`` (Accelerate loop), ``checkpoint``, ``metrics``, ``export``. See docs/training.md.
"""
