"""Image-text pairs: folder + captions and WebDataset tars; bad samples are None, every image comes out RGB."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from thinkdiff.errors import ThinkDiffError
from training.config import load_config
from training.pairs import PairDataset, _FileEntry, pairs_from_config, read_captions_file, source_entries


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


def test_tar_keys_and_captions_follow_webdataset_conventions(tmp_path: Path):
    """The key is the member's path up to the first dot of its file name; a .json's ``caption`` (else ``text``) is
    read before a .txt; undecodable caption bytes are replaced, not fatal; a key without an image is no sample."""
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(png, format="PNG")
    members = {
        "top.png": png.getvalue(), "top.json": json.dumps({"caption": "from the json", "text": "not this"}).encode(),
        "top.txt": b"not the txt",
        "v1.0/nested.png": png.getvalue(), "v1.0/nested.json": json.dumps({"text": "the text field"}).encode(),
        "plain.png": png.getvalue(), "plain.txt": b"caf\xe9 latte",  # latin-1, not UTF-8
        "list.png": png.getvalue(), "list.json": b'["a", "list"]',
        "blank.png": png.getvalue(), "blank.json": b'{"url": "https://example.com"}',
        "bare.png": png.getvalue(),
        "two.dots.png": png.getvalue(), "two.dots.txt": b"extension dots.png, no image",
        "orphan.txt": b"a caption without an image",
    }
    path = tmp_path / "shard.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pairs = PairDataset.from_paths(shards=[str(path)], require_caption=False)
    captions = {pairs.key(i): pairs[i].caption for i in range(len(pairs))}
    assert captions == {"top": "from the json", "v1.0/nested": "the text field", "plain": "caf\N{REPLACEMENT CHARACTER} latte",
                        "list": "", "blank": "", "bare": ""}
    assert all(pairs[i].key == pairs.key(i) for i in range(len(pairs)))


def test_config_sources_resolve_against_the_config_folder_in_order(tmp_path: Path):
    for folder in ("imgs", "caps", "own", "shards"):
        (tmp_path / folder).mkdir()
    for name in ("imgs/a.png", "imgs/b.png", "own/c.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "caps" / "pairs.csv").write_text("image,caption\na.png,first\nb.png, \n")  # images in [data] images
    (tmp_path / "own" / "pairs.jsonl").write_text(json.dumps({"image": "c.png", "caption": "beside"}))  # beside the file
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with tarfile.open(tmp_path / "shards" / "000.tar", "w") as tar:
        for name, data in (("t.png", png.getvalue()), ("t.txt", b"from the tar")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "run.toml").write_text('[[data.sources]]\ncaptions = "caps/pairs.csv"\nimages = "imgs"\nweight = 2\n'
                                       '[[data.sources]]\ncaptions = "own/pairs.jsonl"\n'
                                       '[[data.sources]]\nshards = ["shards/*.tar"]\n')
    config = load_config(tmp_path / "run.toml")
    pairs = pairs_from_config(config)
    assert pairs.sizes == [2, 1, 1]
    items = [pairs[i] for i in range(len(pairs))]
    assert [(p.key, p.caption) if p else None for p in items] == [("a", "first"), None, ("c", "beside"), ("t", "from the tar")]
    assert pairs_from_config(config, require_caption=False)[1].caption == ""  # stage A reads it
    assert PairDataset([pairs.entries])[1] is None  # captions are required unless said otherwise


def test_an_empty_source_is_named_by_its_number(tmp_path: Path):
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"image": "a.png", "caption": "x"}) + "\n")
    with pytest.raises(ThinkDiffError, match=r"no image-text pairs found in data source 2: check its captions/images/shards"):
        PairDataset([source_entries(tmp_path / "pairs.jsonl"), []])
    with pytest.raises(ThinkDiffError, match=r"^no image-text pairs found: set \[data\] captions \(with images\) or shards"):
        PairDataset([])


def test_captions_files_are_utf_8_whatever_the_locale(tmp_path: Path, ascii_locale):
    (tmp_path / "pairs.jsonl").write_bytes(json.dumps({"image": "a.png", "caption": "Décris l’image"}, ensure_ascii=False).encode()
                                           + b"\n\n" + json.dumps({"image": "b.png"}).encode() + b"\n")
    # csv: a quoted caption keeps its own line break (the csv module wants newline="")
    (tmp_path / "pairs.csv").write_bytes('image,caption\r\nsub/a.png,"Décris\r\nl’image"\r\n'.encode())
    assert read_captions_file(tmp_path / "pairs.jsonl", tmp_path / "imgs") == [
        _FileEntry("a", tmp_path / "imgs" / "a.png", "Décris l’image"), _FileEntry("b", tmp_path / "imgs" / "b.png", "")]
    assert read_captions_file(tmp_path / "pairs.csv", tmp_path) == [_FileEntry("a", tmp_path / "sub" / "a.png", "Décris\r\nl’image")]
    with pytest.raises(ThinkDiffError, match=r"pairs\.txt: captions must be a \.jsonl or \.csv file"):
        read_captions_file(tmp_path / "pairs.txt", tmp_path)
