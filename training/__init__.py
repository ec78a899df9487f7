"""Offline training of ThinkDiff aligners (LVLM and CLIP variants) in this pack's file format.

Depends on the ``thinkdiff`` library (never on ComfyUI). Modules: ``config`` (TOML + overrides),
``pairs`` (image-text data), ``precompute`` + ``feature_store`` (LVLM stage A), ``masking`` and
``objectives`` (the proxy tasks), ``models`` (frozen T5 / vision tower, aligner init), ``optim``,
``trainer`` (Accelerate loop), ``checkpoint``, ``metrics``, ``export``. See docs/training.md.
"""
