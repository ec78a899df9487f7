"""What a generate backend returns and where its outputs go (shared by ``generate`` and every backend).

Layout under ``OUTPUT_DIR/images``: ``shot_{N}/task_{T}/{save_name}.jpg`` (the image), ``.txt`` (the VLM's answer) and
``.json`` (a small record with the seconds it took, written last: a sample with a record is finished).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from .samples import Sample


@dataclass
class Generated:
    image: Image.Image
    text: str = ""  # the VLM's answer
    tokens: int = 0
    vlm_seconds: float = 0.0  # this sample's share of its VLM batch (the diffusers backend measures it)


class Backend(Protocol):
    def generate(self, samples: Sequence[Sample], seeds: Sequence[int]) -> list[Generated]:
        """One image per sample, in order."""


def sample_dir(images_dir: Path, sample: Sample) -> Path:
    return images_dir / f"shot_{sample.shot}" / f"task_{sample.task}"


def image_file(images_dir: Path, sample: Sample) -> Path:
    return sample_dir(images_dir, sample) / f"{sample.save_name}.jpg"


def record_file(images_dir: Path, sample: Sample) -> Path:
    return sample_dir(images_dir, sample) / f"{sample.save_name}.json"
