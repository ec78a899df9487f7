"""ThinkDiff-CLIP image tokens: construction, preprocessing, the vision file and the BLIP-2 extraction CLI."""

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2VisionModel, CLIPVisionConfig

from tests.support.tiny_models import TINY_VISION_TOWER, make_aligner, make_vision, tiny_vision_config, trained_looking
from tests.support.torch_files import Gadget
from thinkdiff import vision_extract
from thinkdiff.__main__ import main as cli
from thinkdiff.errors import ThinkDiffError
from thinkdiff.vision import CLIP_MEAN, CLIP_STD, VisionTokenEncoder, image_tokens, save_vision_file
from thinkdiff.vision_extract import extract_blip2_vision


@pytest.fixture(scope="module")
def tower() -> Blip2VisionModel:
    torch.manual_seed(0)
    return trained_looking(Blip2VisionModel(tiny_vision_config())).eval()


def test_tokens_are_cls_then_the_grid_averaged_in_2x2_blocks():
    """16x16 -> 8x8 bilinear (align_corners=False) samples exactly between pixel pairs: a 2x2 mean."""
    hidden = torch.randn(2, 1 + 16 * 16, 5)
    tokens = image_tokens(hidden, 8)
    assert tokens.shape == (2, 65, 5)
    assert torch.equal(tokens[:, 0], hidden[:, 0])
    grid = hidden[:, 1:].reshape(2, 16, 16, 5)  # row-major patches
    expected = grid.reshape(2, 8, 2, 8, 2, 5).mean(dim=(2, 4)).reshape(2, 64, 5)
    torch.testing.assert_close(tokens[:, 1:], expected)


def test_odd_downsampling_matches_torch_bilinear():
    hidden = torch.randn(1, 1 + 6 * 6, 3)
    patches = hidden[:, 1:].reshape(1, 6, 6, 3).permute(0, 3, 1, 2)
    expected = F.interpolate(patches, size=(4, 4), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).reshape(1, 16, 3)
    torch.testing.assert_close(image_tokens(hidden, 4)[:, 1:], expected)


def test_grid_equal_to_patches_keeps_them():
    hidden = torch.randn(1, 1 + 4 * 4, 3)
    assert torch.equal(image_tokens(hidden, 4), hidden)


def test_non_square_grid_is_refused():
    with pytest.raises(ThinkDiffError, match="square patch grid"):
        image_tokens(torch.randn(1, 1 + 10, 3), 8)


def test_preprocessing_is_the_reference_transform(tower):
    """Resize((224, 224), BICUBIC) -> ToTensor -> Normalize(CLIP mean, std), as blip2_image_train / Blip2Processor."""
    image = Image.fromarray((torch.rand(90, 130, 3) * 255).byte().numpy())
    pixels = VisionTokenEncoder(tower).preprocess([image, image.convert("L"), image.convert("RGBA")])
    assert pixels.shape == (3, 3, 224, 224)
    resized = torch.from_numpy(np.asarray(image.resize((224, 224), Image.BICUBIC))).float()
    expected = (resized.permute(2, 0, 1) / 255 - torch.tensor(CLIP_MEAN)[:, None, None]) \
        / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(pixels[0], expected)
    torch.testing.assert_close(pixels[2], pixels[0])  # alpha dropped


def test_tokens_come_from_the_post_layernorm_output(tower):
    encoder = VisionTokenEncoder(tower)
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        hidden = tower.post_layernorm(tower.encoder(tower.embeddings(pixels)).last_hidden_state)
        torch.testing.assert_close(encoder(pixels), image_tokens(hidden, 8))
    assert encoder.num_tokens == 65 and encoder.hidden_size == TINY_VISION_TOWER["hidden_size"]


def test_vision_file_round_trip_keeps_grid_and_config(tmp_path, tower):
    path = save_vision_file(tower, tmp_path / "v.safetensors", grid=4)
    loaded = VisionTokenEncoder.from_file(path)
    assert loaded.num_tokens == 17
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), VisionTokenEncoder(tower, grid=4)(pixels))


@pytest.fixture(scope="module")
def blip2() -> Blip2ForConditionalGeneration:
    torch.manual_seed(1)
    config = Blip2Config(
        vision_config=tiny_vision_config().to_dict(),
        qformer_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                        "encoder_hidden_size": 32},
        text_config={"model_type": "t5", "vocab_size": 32128, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1,
                     "num_decoder_layers": 1, "num_heads": 2, "decoder_start_token_id": 0},
        num_query_tokens=4)
    return trained_looking(Blip2ForConditionalGeneration(config)).eval()


def assert_same_tokens(path, blip2) -> None:
    encoder, pixels = VisionTokenEncoder.from_file(path).float(), torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), VisionTokenEncoder(blip2.vision_model, encoder.grid)(pixels),
                                   rtol=2e-3, atol=2e-3)  # stored in fp16


@pytest.fixture
def shards_read(monkeypatch) -> list[str]:
    """The names of the shards the extraction opens."""
    opened: list[str] = []
    read = vision_extract._vision_tensors

    def spy(shard):
        opened.append(shard.name)
        return read(shard)

    monkeypatch.setattr(vision_extract, "_vision_tensors", spy)
    return opened


def test_extraction_from_a_blip2_folder(tmp_path, blip2, shards_read, capsys):
    blip2.save_pretrained(tmp_path / "blip2", max_shard_size="1MB")  # sharded, with an index, like the real one
    index = json.loads((tmp_path / "blip2" / "model.safetensors.index.json").read_text())["weight_map"]
    target = tmp_path / "models" / "blip2_vision.safetensors"
    assert cli(["extract-vision", str(tmp_path / "blip2"), str(target), "--dtype", "fp32"]) == 0
    assert capsys.readouterr().out == f"wrote {target} ({target.stat().st_size / 10**6:,.1f} MB)\n"
    assert 0.1 < target.stat().st_size / 10**6 < 1000  # the line's figure is not 0.0
    encoder = VisionTokenEncoder.from_file(target)
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), VisionTokenEncoder(blip2.vision_model)(pixels))
    # only the shards that hold the vision tower are read (the real download's 15 GB stay on disk)
    assert sorted(shards_read) == sorted({file for key, file in index.items() if key.startswith("vision_model.")})
    assert len(set(index.values())) > len(shards_read)


def save_bin(blip2, folder, shards: int = 1) -> None:
    """The older ``pytorch_model*.bin`` layout (transformers 5 writes only safetensors): one file, or the vision tower in the
    first of ``shards`` files with an index."""
    blip2.config.save_pretrained(folder)
    state = blip2.state_dict()
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return
    names = [f"pytorch_model-{n:05d}-of-{shards:05d}.bin" for n in range(1, shards + 1)]
    weight_map = {key: names[0] if key.startswith("vision_model.") else names[1 + hash(key) % (shards - 1)] for key in state}
    for name in names:
        torch.save({key: value for key, value in state.items() if weight_map[key] == name}, folder / name)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_extraction_reads_pytorch_bin_shards_through_their_index(tmp_path, blip2, shards_read):
    save_bin(blip2, tmp_path / "blip2", shards=3)
    index = json.loads((tmp_path / "blip2" / "pytorch_model.bin.index.json").read_text())["weight_map"]
    extract_blip2_vision(tmp_path / "blip2", tmp_path / "vision.safetensors")
    assert sorted(shards_read) == sorted({file for key, file in index.items() if key.startswith("vision_model.")})
    assert len(set(index.values())) > len(shards_read)
    assert_same_tokens(tmp_path / "vision.safetensors", blip2)


@pytest.mark.parametrize("safe", [True, False], ids=["model.safetensors", "pytorch_model.bin"])
def test_extraction_from_one_unsharded_file_stores_fp16_with_the_grid_and_source(tmp_path, blip2, safe):
    if safe:
        blip2.save_pretrained(tmp_path / "blip2-small")
    else:
        save_bin(blip2, tmp_path / "blip2-small")
    target = extract_blip2_vision(tmp_path / "blip2-small", tmp_path / "vision.safetensors", grid=4)
    with safe_open(str(target), framework="pt") as stored:
        metadata, dtypes = stored.metadata(), {stored.get_tensor(key).dtype for key in stored.keys()}  # noqa: SIM118
    assert dtypes == {torch.float16}  # the default: about 2 GB for the real tower
    assert metadata["token_grid"] == "4" and metadata["source_model"] == "blip2-small"
    assert_same_tokens(target, blip2)


def test_extraction_never_unpickles_anything_but_tensors(tmp_path, blip2):
    save_bin(blip2, tmp_path / "blip2")
    state = torch.load(tmp_path / "blip2" / "pytorch_model.bin", weights_only=True)
    marker = tmp_path / "unpickled"  # what building the object would create
    torch.save({**state, "vision_model.payload": Gadget(Path.touch, marker)}, tmp_path / "blip2" / "pytorch_model.bin")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        extract_blip2_vision(tmp_path / "blip2", tmp_path / "vision.safetensors")
    assert not marker.exists()


def test_a_folder_without_vision_weights_or_with_other_widths_is_refused(tmp_path, blip2):
    folder = tmp_path / "blip2"
    blip2.config.save_pretrained(folder)
    save_file({"language_model.lm_head.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    with pytest.raises(ThinkDiffError) as refused:
        extract_blip2_vision(folder, tmp_path / "vision.safetensors")
    assert str(refused.value) == f"no vision_model.* weights in {folder}: is the download complete?"
    state = {f"vision_model.{key}": value for key, value in blip2.vision_model.state_dict().items()}
    del state["vision_model.post_layernorm.weight"]  # a missing tensor would otherwise stay empty (on the meta device)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ThinkDiffError, match=rf"(?s)^the vision weights in {re.escape(str(folder))} do not match its config: "
                                             r".*Missing key.*post_layernorm\.weight"):
        extract_blip2_vision(folder, tmp_path / "vision.safetensors")


def test_the_command_stores_fp16_by_default(tmp_path, blip2):
    blip2.save_pretrained(tmp_path / "blip2")
    assert cli(["extract-vision", str(tmp_path / "blip2"), str(tmp_path / "v.safetensors")]) == 0
    assert {tensor.dtype for tensor in load_file(str(tmp_path / "v.safetensors")).values()} == {torch.float16}


def test_extraction_needs_a_blip2_folder(tmp_path, capsys):
    assert cli(["extract-vision", str(tmp_path), str(tmp_path / "out.safetensors")]) == 1
    assert "not a BLIP-2 model folder" in capsys.readouterr().err


def test_an_aligner_is_not_a_vision_file(tmp_path):
    path = make_aligner(tmp_path / "aligner.safetensors")
    with pytest.raises(ThinkDiffError, match="extract-vision"):
        VisionTokenEncoder.from_file(path)


def test_missing_and_corrupt_vision_files(tmp_path):
    with pytest.raises(ThinkDiffError, match="not found"):
        VisionTokenEncoder.from_file(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"junk" * 20)
    with pytest.raises(ThinkDiffError, match="not a .safetensors file .*damaged; extract or download it again"):
        VisionTokenEncoder.from_file(tmp_path / "bad.safetensors")


def test_a_truncated_vision_file_is_named_with_its_missing_bytes(tmp_path):
    path = make_vision(tmp_path / "vision.safetensors")
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 1000])
    with pytest.raises(ThinkDiffError, match=rf"vision.safetensors is truncated \({size - 1000:,} of {size:,} bytes.*extract or download"):
        VisionTokenEncoder.from_file(path)


def test_no_images():
    with pytest.raises(ThinkDiffError, match="no image"):
        VisionTokenEncoder(Blip2VisionModel(tiny_vision_config())).preprocess([])


def test_a_one_patch_grid_is_cls_and_that_patch():
    hidden = torch.randn(2, 2, 3)
    assert torch.equal(image_tokens(hidden, 1), hidden)
    four = torch.randn(1, 5, 3)  # a 2x2 grid to one token: their mean
    torch.testing.assert_close(image_tokens(four, 1)[:, 1], four[:, 1:].mean(dim=1))


def test_an_empty_image_list_says_how_to_fix_it(tower):
    with pytest.raises(ThinkDiffError) as refused:
        VisionTokenEncoder(tower).preprocess([])
    assert str(refused.value) == "no image to encode: connect at least one image."


def test_the_encoder_is_in_inference_mode_whatever_the_tower_was(tower):
    encoder = VisionTokenEncoder(Blip2VisionModel(tiny_vision_config(attention_dropout=0.5)).train())
    assert not encoder.model.training
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), encoder(pixels))  # no dropout


def test_an_encoders_own_mean_and_std_normalise_its_pixels(tower):
    image = Image.fromarray((torch.rand(30, 40, 3) * 255).byte().numpy())
    mean, std = (0.5, 0.25, 0.75), (0.2, 0.4, 0.1)
    pixels = VisionTokenEncoder(tower, mean=mean, std=std).preprocess([image])
    resized = torch.tensor(np.array(image.resize((224, 224), Image.BICUBIC)), dtype=torch.float32).permute(2, 0, 1) / 255
    torch.testing.assert_close(pixels[0], (resized - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])


def test_pixels_follow_the_towers_precision_and_device(tower):
    pixels = torch.randn(1, 3, 224, 224)  # float32 on the CPU, as preprocess makes them
    half = VisionTokenEncoder(Blip2VisionModel(tiny_vision_config()).to(torch.bfloat16))
    half.model.load_state_dict(tower.state_dict())
    with torch.no_grad():
        tokens = half(pixels)
        torch.testing.assert_close(tokens.float(), VisionTokenEncoder(tower)(pixels), rtol=0.05, atol=0.05)
    assert tokens.dtype == torch.bfloat16
    with torch.device("meta"):
        elsewhere = VisionTokenEncoder(Blip2VisionModel(tiny_vision_config()))
    assert elsewhere(pixels).device.type == "meta"  # moved to the tower's device, wherever that is


def test_a_vision_file_loads_in_the_precision_asked_or_as_stored(tmp_path, tower):
    path = save_vision_file(tower, tmp_path / "v.safetensors", dtype=torch.float16)
    assert {p.dtype for p in VisionTokenEncoder.from_file(path).parameters()} == {torch.float16}
    assert {p.dtype for p in VisionTokenEncoder.from_file(path, torch.bfloat16).parameters()} == {torch.bfloat16}


def test_a_vision_file_missing_a_tensor_is_refused(tmp_path, tower):
    path = save_vision_file(tower, tmp_path / "v.safetensors")
    with safe_open(str(path), framework="pt") as stored:
        metadata = stored.metadata()
    state = load_file(str(path))
    del state["post_layernorm.bias"]
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(ThinkDiffError, match=r"(?s)^v\.safetensors does not match its own config \(.*post_layernorm\.bias.*\); "
                                             "extract it again\\.$"):
        VisionTokenEncoder.from_file(path)


def test_the_vision_file_holds_the_whole_config_its_width_and_only_float_tensors_cast(tmp_path, tower):
    tower.register_buffer("steps", torch.arange(3))  # an integer tensor keeps its type
    try:
        path = save_vision_file(tower, tmp_path / "a" / "b" / "v.safetensors", dtype=torch.float16)
    finally:
        del tower.steps
    with safe_open(str(path), framework="pt") as stored:
        metadata, state = stored.metadata(), {key: stored.get_tensor(key) for key in stored.keys()}  # noqa: SIM118
    assert state.pop("steps").dtype == torch.int64 and {v.dtype for v in state.values()} == {torch.float16}
    assert json.loads(metadata["config"]).items() >= {"hidden_act": "gelu", "layer_norm_eps": 1e-6}.items()  # defaults too
    assert metadata["hidden_size"] == str(TINY_VISION_TOWER["hidden_size"])


def test_only_supported_towers_are_saved(tmp_path):
    with pytest.raises(ThinkDiffError) as refused:
        save_vision_file(torch.nn.Linear(2, 2), tmp_path / "v.safetensors")
    assert str(refused.value) == "unsupported vision encoder 'Linear'; supported: Blip2VisionModel"


def test_an_encoder_of_random_weights_from_a_config_as_the_benchmarks_build_it():
    encoder = VisionTokenEncoder.from_config(tiny_vision_config(hidden_size=24), grid=4)
    assert type(encoder.model) is Blip2VisionModel and encoder.hidden_size == 24 and encoder.num_tokens == 17
    assert encoder.encode([Image.new("RGB", (30, 20))]).shape == (1, 17, 24)
    with pytest.raises(ThinkDiffError, match="unsupported vision encoder 'CLIPVisionModel'"):
        VisionTokenEncoder.from_config(CLIPVisionConfig())
