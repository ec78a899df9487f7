"""Image-text pairs: folder + captions and WebDataset tars; bad samples are None, every image comes out RGB."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinkdiff.errors import ThinkDiffError
from training.pairs import PairDataset


def test_folder_pairs_convert_to_rgb_and_skip_bad_samples(photo_set: Path, photo_captions: dict):
    pairs = PairDataset.from_paths(photo_set / "captions.jsonl")
    items = [pairs[i] for i in range(len(pairs))]
    assert len(items) == len(photo_captions) + 2
    good = [p for p in items if p is not None]
    assert len(good) == len(photo_captions)  # the unreadable file and the empty caption are None
    assert {p.image.mode for p in good} == {"RGB"}  # from RGB, L and RGBA files
    assert good[0].caption == photo_captions["astronaut.png"]


def test_captions_are_optional_for_stage_a(photo_set: Path, photo_captions: dict):
    pairs = PairDataset.from_paths(photo_set / "captions.jsonl", require_caption=False)
    assert sum(pairs[i] is not None for i in range(len(pairs))) == len(photo_captions) + 1


def test_csv_captions(tmp_path: Path, photo_set: Path):
    (tmp_path / "pairs.csv").write_text('image,caption\nimages/coffee.png,"a cup, of coffee"\n')
    pairs = PairDataset.from_paths(tmp_path / "pairs.csv", images=photo_set)
    assert pairs[0].caption == "a cup, of coffee" and pairs[0].image.mode == "RGB"


def test_webdataset_tar_pairs(photo_tar: Path, photo_captions: dict):
    pairs = PairDataset.from_paths(shards=[str(photo_tar.parent / "*.tar")])
    items = [pairs[i] for i in range(len(pairs))]
    assert len(items) == len(photo_captions) + 1
    assert sum(p is None for p in items) == 1  # the corrupt jpeg
    assert [p.caption for p in items if p] == list(photo_captions.values())  # .json caption preferred over .txt


def test_no_data_is_an_error(tmp_path: Path):
    with pytest.raises(ThinkDiffError, match="no image-text pairs"):
        PairDataset.from_paths()
