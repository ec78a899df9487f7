"""``export``: a checkpoint's aligner as the ``.safetensors`` file the ComfyUI nodes load."""

from __future__ import annotations

from pathlib import Path

from thinkdiff.aligner_files import AlignerWeights, save_aligner_weights
from thinkdiff.errors import ThinkDiffError

from .checkpoint import latest_checkpoint, read_checkpoint


def export_aligner(run_dir: Path, output: Path, checkpoint: Path | None = None) -> Path:
    """Write ``output`` from ``checkpoint`` (default: the run's latest) with variant and provenance metadata."""
    checkpoint = checkpoint or latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ThinkDiffError(f"{run_dir} has no checkpoint to export: train first (python -m training align)")
    weights, record = read_checkpoint(checkpoint)
    return save_aligner_weights(AlignerWeights(weights), output, variant=record["variant"], source_model=record["source_model"],
                                t5_model=record["t5_model"], training_steps=str(record["train"]["step"]),
                                trained_with="ComfyUI-ThinkDiff training/")
