"""ThinkDiff-CLIP image tokens: construction, preprocessing, the vision file and the BLIP-2 extraction CLI."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2VisionModel

from tests.support.tiny_models import TINY_VISION_TOWER, make_aligner, make_vision, tiny_vision_config, trained_looking
from thinkdiff.__main__ import main as cli
from thinkdiff.errors import ThinkDiffError
from thinkdiff.vision import CLIP_MEAN, CLIP_STD, VisionTokenEncoder, image_tokens, save_vision_file


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


def test_extraction_from_a_blip2_folder(tmp_path, tower):
    torch.manual_seed(1)
    config = Blip2Config(
        vision_config=tiny_vision_config().to_dict(),
        qformer_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                        "encoder_hidden_size": 32},
        text_config={"model_type": "t5", "vocab_size": 32128, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1,
                     "num_decoder_layers": 1, "num_heads": 2, "decoder_start_token_id": 0},
        num_query_tokens=4)
    blip2 = Blip2ForConditionalGeneration(config).eval()
    blip2.save_pretrained(tmp_path / "blip2", max_shard_size="1MB")  # sharded, with an index, like the real one
    assert (tmp_path / "blip2" / "model.safetensors.index.json").is_file()
    target = tmp_path / "models" / "blip2_vision.safetensors"
    assert cli(["extract-vision", str(tmp_path / "blip2"), str(target), "--dtype", "fp32"]) == 0
    encoder = VisionTokenEncoder.from_file(target)
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), VisionTokenEncoder(blip2.vision_model)(pixels))


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
