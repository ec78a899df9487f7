"""The model judges on tiny random models: each reply equals an independent single-question greedy run of the same model
in the protocol's prompt format, and the CLIP metric equals CoBSAT's formula computed from the model's parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, CLIPModel, CLIPProcessor, LlavaForConditionalGeneration

from evaluation.cobsat.generate import generate
from evaluation.cobsat.judge import judge, read_rows, read_summary, scores_file
from evaluation.cobsat.judges import ClipMetric, LlavaJudge, QwenJudge, _open, llava_prompt, load_model_judge, resolve_device
from evaluation.cobsat.protocol import TASKS, parse_answer, question
from evaluation.cobsat.records import image_file
from evaluation.cobsat.samples import Sample
from thinkdiff.errors import ThinkDiffError
from thinkdiff.sampling_options import SamplingOptions
from thinkdiff.vlm import QwenVLEncoder, VLMRequest

CPU = torch.device("cpu")


def test_the_llava_prompt_is_llava_v1():
    assert llava_prompt("Q?") == ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                                  "helpful, detailed, and polite answers to the human's questions. USER: <image>\nQ? ASSISTANT:")


@pytest.fixture(scope="module")
def questions(standin: Path) -> list[tuple[Path, str]]:
    images = [standin / "color_car" / "blue_car.jpg", standin / "color_hat" / "red_hat.jpg", standin / "style_cup" / "3d_cup.jpg"]
    return [(image, question(TASKS[task], part)) for image, task in zip(images, (1, 2, 6), strict=True) for part in ("detail", "obj")]


def test_llava_judge_batches_equal_single_greedy_runs(tiny_llava: Path, questions):
    judge_ = LlavaJudge(tiny_llava, torch.float32, CPU, max_new_tokens=6)
    replies = judge_.answer(questions)
    processor = AutoProcessor.from_pretrained(str(tiny_llava))
    model = LlavaForConditionalGeneration.from_pretrained(str(tiny_llava)).train(False)
    for (path, text), reply in zip(questions, replies, strict=True):
        inputs = processor(images=Image.open(path).convert("RGB"), text=llava_prompt(text), return_tensors="pt")
        assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == 4  # (28 / 14)^2 patches
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=6, pad_token_id=processor.tokenizer.pad_token_id)
        assert reply == processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert judge_.name == tiny_llava.name and judge_.answer([]) == []
    # Greedy up to the token budget, stopping at the tokenizer's end token; finished rows padded with its pad token.
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert (judge_.generation.eos_token_id, judge_.generation.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert judge_.generation.max_new_tokens == 6 and judge_.processor.tokenizer.padding_side == "left"
    assert (judge_.generation.do_sample, judge_.generation.num_beams) == (False, 1)  # greedy


def test_a_llava_without_a_pad_token_pads_with_its_end_token(tiny_llava: Path, monkeypatch):
    import evaluation.cobsat.judges as judges

    class WithoutPad:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            processor = AutoProcessor.from_pretrained(*args, **kwargs)
            processor.tokenizer.pad_token = None
            return processor

    monkeypatch.setattr(judges, "AutoProcessor", WithoutPad)
    judge_ = LlavaJudge(tiny_llava, torch.float16, torch.device("meta"))
    tokenizer = judge_.processor.tokenizer
    assert tokenizer.pad_token_id is None and judge_.generation.pad_token_id == tokenizer.eos_token_id is not None


def test_the_judges_load_where_and_how_they_are_told(tiny_llava: Path, tiny_vlm_folder: Path, tiny_clip: Path):
    """The paper's defaults (512 new tokens), the given dtype and device (the meta device: nothing computed), inference mode."""
    meta = torch.device("meta")
    llava = LlavaJudge(tiny_llava, torch.float16, meta)
    assert llava.generation.max_new_tokens == 512 and llava.device == meta
    assert {(p.device, p.dtype) for p in llava.model.parameters()} == {(meta, torch.float16)} and not llava.model.training
    qwen = QwenJudge(tiny_vlm_folder, torch.float16, meta)
    assert qwen.sampling == SamplingOptions(max_new_tokens=512, greedy=True, stop_at_eos=True) and qwen.name == tiny_vlm_folder.name
    assert {(p.device, p.dtype) for p in qwen.encoder.parameters()} == {(meta, torch.float16)} and qwen.answer([]) == []
    clip = ClipMetric(tiny_clip, "meta")
    assert clip.device == meta and {p.device for p in clip.model.parameters()} == {meta} and not clip.model.training
    assert ClipMetric(tiny_clip).device == torch.device("cpu")  # "auto" on a machine without CUDA
    # The [judge] model picks the class; its dtype name, device name and token budget reach it.
    llava = load_model_judge("llava", tiny_llava, "bf16", "meta", 3)
    assert isinstance(llava, LlavaJudge) and llava.generation.max_new_tokens == 3
    assert {(p.device, p.dtype) for p in llava.model.parameters()} == {(meta, torch.bfloat16)}
    qwen = load_model_judge("qwen2vl", tiny_vlm_folder, "bf16", "meta", 3)
    assert isinstance(qwen, QwenJudge) and qwen.sampling.max_new_tokens == 3
    assert {(p.device, p.dtype) for p in qwen.encoder.parameters()} == {(meta, torch.bfloat16)}


def test_auto_is_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (resolve_device("auto"), resolve_device("cpu"), resolve_device("cuda:1")) == (
        torch.device("cuda"), torch.device("cpu"), torch.device("cuda:1"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_images_are_read_as_rgb(tmp_path: Path):
    path = tmp_path / "grey.png"
    Image.new("L", (4, 4), 200).save(path)
    image = _open(path)
    assert image.mode == "RGB" and image.getpixel((1, 1)) == (200, 200, 200)


def test_qwen2vl_judge_equals_greedy_encode(tiny_vlm_folder: Path, encoder: QwenVLEncoder, questions):
    judge_ = QwenJudge(tiny_vlm_folder, torch.float32, CPU, max_new_tokens=5)
    replies = judge_.answer(questions[:2])
    sampling = SamplingOptions(max_new_tokens=5, greedy=True, stop_at_eos=True)
    assert judge_.sampling == sampling  # greedy, stopping at end-of-text
    expected = [encoder.encode([VLMRequest(text, [Image.open(path).convert("RGB")])], sampling)[0].text.strip()
                for path, text in questions[:2]]
    assert replies == expected


def test_clip_metric_is_cobsats_formula(tiny_clip: Path, standin: Path):
    sample = Sample(2, 2, 0, ("bag: ", "ball: ", "box: "), (), {"detail": "pink", "obj": "box"}, "0_pink_bag_ball_box")
    path = standin / "color_box" / "pink_box.jpg"
    metric = ClipMetric(tiny_clip, "cpu")
    values = metric.score(path, sample)
    assert metric.device == CPU and not metric.model.training
    model, processor = CLIPModel.from_pretrained(str(tiny_clip)).train(False), CLIPProcessor.from_pretrained(str(tiny_clip))
    texts = ["pink", "box", "pink box", *TASKS[2].vocabulary("obj"), *TASKS[2].vocabulary("detail")]
    with torch.inference_mode():
        tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
        text = model.text_projection(model.text_model(**tokens).pooler_output)
        pixels = processor.image_processor(Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        cosine = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(image, dim=-1)[0]
        similarity = (cosine * model.logit_scale.exp()).clamp(min=0)
    assert values["clip_similarity_overall"] == pytest.approx(float(similarity[2]), rel=1e-4)
    assert values["clip_similarity_detail"] == pytest.approx(float(similarity[0]), rel=1e-4)
    object_pick, detail_pick = int(similarity[3:13].argmax()) + 1, int(similarity[13:].argmax()) + 1
    assert values["clip_check_obj"] == (object_pick == 6) and values["clip_check_detail"] == (detail_pick == 5)
    assert values["clip_correct"] == (values["clip_check_obj"] and values["clip_check_detail"])


def test_judge_step_with_llava_and_clip(eval_config, tiny_llava: Path, tiny_clip: Path):
    """generate (oracle) -> judge with the tiny LLaVA and CLIP from the config; rows hold the replies and their parse."""
    config = eval_config('generate.backend="oracle"', 'judge.model="llava"', f"judge.folder={json.dumps(str(tiny_llava))}",
                         f"judge.clip={json.dumps(str(tiny_clip))}", 'judge.dtype="fp32"', "judge.max_new_tokens=4",
                         "judge.batch_size=4", "run.samples_per_task=2")
    images = generate(config)
    summary = read_summary(judge(config))
    rows = read_rows(scores_file(config.output_dir / "scores" / tiny_llava.name, 2, 1))
    assert len(rows) == 2 and {row["index"] for row in rows.values()} == {0, 1}
    first = config.samples()[0]
    expected = LlavaJudge(tiny_llava, torch.float32, CPU, max_new_tokens=4).answer(
        [(image_file(images, first), question(TASKS[1], part)) for part in ("detail", "obj")])
    assert [rows[0]["response_detail"], rows[0]["response_obj"]] == expected
    assert rows[0]["answer_detail"] == parse_answer(expected[0]) and "clip_similarity_overall" in rows[0]
    assert [row["task"] for row in summary] == [1, 2] and all("clip_correct" in row for row in summary)


def test_missing_or_broken_model_folders_say_what_to_download(tmp_path: Path):
    empty = tmp_path / "empty"
    with pytest.raises(ThinkDiffError) as error:
        LlavaJudge(empty, torch.float16, CPU)
    assert str(error.value) == (f"{empty} is not a Hugging Face model folder (no config.json): download LLaVA-1.5-13B (llava-hf "
                                f"format) there, e.g. `huggingface-cli download llava-hf/llava-1.5-13b-hf --local-dir {empty}`")
    with pytest.raises(ThinkDiffError) as error:
        ClipMetric(empty)
    assert str(error.value) == (f"{empty} is not a Hugging Face model folder (no config.json): download CLIP ViT-B/32 there, "
                                f"e.g. `huggingface-cli download openai/clip-vit-base-patch32 --local-dir {empty}`")
    broken = tmp_path / "llava-1.5-13b-hf"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(ThinkDiffError, match=rf"could not load LLaVA from {broken}: .*\. It must be the complete llava-hf download "
                                             r"\(https://huggingface.co/llava-hf/llava-1.5-13b-hf\)\."):
        LlavaJudge(broken, torch.float16, CPU)


@pytest.mark.parametrize(("setting", "message"), [
    ('judge.model="llava"', "no config.json"), ('judge.model="qwen2vl"', "not a Hugging Face model folder")])
def test_missing_judge_models_are_explained(eval_config, tmp_path: Path, setting: str, message: str):
    config = eval_config('generate.backend="oracle"', setting, f"judge.folder={json.dumps(str(tmp_path / 'empty'))}")
    generate(config)
    with pytest.raises(ThinkDiffError, match=message):
        judge(config)
