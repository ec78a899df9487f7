"""Write the node help pages (web/docs/<NodeId>.md) from the nodes' own schemas plus the notes below.

    .dev/venv/bin/python scripts/make_help_pages.py

Starts ComfyUI (tests/support/paths.py's: 0.33.0 unless THINKDIFF_COMFYUI says otherwise; both give the same pages) with
the pack installed as the Manager would, reads /object_info (display name, description, category, every input with its
tooltip, default, range and step, multiline text, control after generate, a combo's options or, for model lists, where
they come from (MODEL_LISTS), hidden inputs (HIDDEN)) and adds the hand-written output descriptions and tips of NOTES. A
node without notes still gets a complete inputs section; tests/test_install.py checks that every page documents every
input, tests/test_help_pages.py that the committed pages are what this writes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.comfy_server import PACK_NAME, ComfyServer
from tests.support.paths import REPO
from tests.support.shipping import install_like_manager

DOCS = REPO / "web" / "docs"
SETUP = "Model setup: see docs/models.md, or run `python -m thinkdiff doctor` in `ComfyUI/custom_nodes/ComfyUI-ThinkDiff`."
NOTES: dict[str, dict[str, Any]] = {
    "ThinkDiffVLMLoader": {
        "outputs": {"vlm": "The loaded Qwen2-VL, managed by ComfyUI (moved to the GPU only while it thinks, then offloaded)."},
        "tips": ["The list shows every folder with a `config.json` under `ComfyUI/models/LLM` (two levels deep). "
                 "Restart ComfyUI or press R after adding a model.",
                 "The released LVLM aligner was trained on **Qwen2-VL-7B-Instruct** (hidden size 3584); other sizes need "
                 "their own aligner.", SETUP]},
    "ThinkDiffVLMEncode": {
        "outputs": {"features": "Hidden states of the generated tokens, for a ThinkDiff → Flux Conditioning node.",
                    "text": "The VLM's answer as text (also shown on the node while it generates)."},
        "tips": ["This is the *thinking* step: the answer's token features, not the text, condition Flux.",
                 "Changing only the KSampler seed re-uses the cached features; change this node's seed to think again.",
                 "Out of memory: lower `max_pixels`, use `dtype` fp16/bf16, or `device` cpu on the loader (slow)."]},
    "ThinkDiffAlignerLoader": {
        "outputs": {"aligner": "The aligner (features → Flux/CogVideoX T5 space)."},
        "tips": ["Use `thinkdiff_lvlm.safetensors` with the VLM nodes and `thinkdiff_clip.safetensors` with the vision "
                 "encoder nodes.", "Release `.pth` files that hold only tensors load too; others must be converted once "
                 "with `python -m thinkdiff convert-aligner` (nothing in them is executed).", SETUP]},
    "ThinkDiffFluxConditioning": {
        "outputs": {"conditioning": "Flux CONDITIONING for KSampler's positive input (use cfg 1.0 with Flux-dev)."},
        "tips": ["For the negative, pass this conditioning through ConditioningZeroOut (ignored at cfg 1.0).",
                 "Without a CLIP the pooled vector is zeros; connect the Flux DualCLIPLoader for the paper's behaviour."]},
    "ThinkDiffVisionLoader": {
        "outputs": {"vision": "The BLIP-2 vision tower, managed by ComfyUI."},
        "tips": ["Make the file once from a local Salesforce/blip2-flan-t5-xxl folder with `python -m thinkdiff "
                 "extract-vision`; the BLIP-2 folder can be deleted afterwards.", SETUP]},
    "ThinkDiffImageEncode": {
        "outputs": {"image_tokens": "65 tokens per image (CLS + 8x8 patches), in batch order."},
        "tips": ["Join several LoadImage outputs with a Batch Images node to compose two images."]},
    "ThinkDiffCLIPFluxConditioning": {
        "outputs": {"conditioning": "Flux CONDITIONING for KSampler's positive input."},
        "tips": ["Pass the output through ConditioningZeroOut for the negative and sample with cfg 1.0."]},
    "ThinkDiffCogVideoXConditioning": {
        "outputs": {"positive": "CogVideoX conditioning for KSampler's positive input.",
                    "negative": "The negative prompt's conditioning, same shape."},
        "tips": ["Needs ComfyUI 0.21 or newer (native CogVideoX); on older ComfyUI use the wrapper-embeds node."]},
    "ThinkDiffT5Conditioning": {
        "outputs": {"conditioning": "The connected model's own CONDITIONING (the keys, pooled vector, mask and minimum "
                                    "length its CLIPTextEncode gives), with the aligned answer tokens first in the T5 part."},
        "tips": ["Supported: SD3 / SD3.5, Chroma, PixArt-Σ, LTX-Video v1, Mochi, CogVideoX. Flux has its own node; Wan "
                 "(UMT5), Cosmos (old T5) and HiDream are refused with what to load instead.",
                 "Templates: thinkdiff_lvlm_chroma_in_context, thinkdiff_lvlm_sd35_image_instruction, and reasoning → video "
                 "in thinkdiff_lvlm_ltxv_video_instruction and thinkdiff_lvlm_cogvideox_in_context. They sample each model "
                 "as its diffusers pipeline does (SD3.5: ModelSamplingSD3 3.0 with scheduler normal; Chroma: "
                 "ModelSamplingFlux from the image size; LTX-Video: LTXVConditioning and LTXVScheduler on the latent, "
                 "8k + 1 frames at 25 fps; CogVideoX: 49 frames at 8 fps, VOIDSampler on BasicScheduler simple).",
                 "The released aligner was trained in Flan-T5-XXL space and used with T5-v1.1 models as the paper did for "
                 "Flux; quality on these models is not measured (no GPU or real weights here)."]},
    "ThinkDiffCLIPT5Conditioning": {
        "outputs": {"conditioning": "The connected model's own CONDITIONING with the aligned image tokens (65 per image) "
                                    "first in the T5 part."},
        "tips": ["Same models and rules as ThinkDiff → T5 Model Conditioning; connect the thinkdiff_clip aligner.",
                 "Template: thinkdiff_clip_chroma_image_text (an image and a text → Chroma)."]},
    "ThinkDiffCogVideoXWrapperEmbeds": {
        "outputs": {"positive": "Bare (1, 226, 4096) embeds for the wrapper's CogVideoSampler.",
                    "negative": "The negative embeds, same shape."},
        "tips": ["Connect only to kijai's CogVideoSampler: the socket is named CONDITIONING but holds a bare tensor."]},
}


# Combos whose options are the user's model files or folders, listed when ComfyUI loads the node (the page says where they
# come from instead of listing the files of the machine that wrote it); every other combo's options are printed.
MODEL_LISTS: dict[tuple[str, str], str] = {
    ("ThinkDiffVLMLoader", "model"): "the model folders under `ComfyUI/models/LLM`, up to two levels deep",
    ("ThinkDiffAlignerLoader", "aligner_name"): "the files in `ComfyUI/models/thinkdiff` that are not vision encoders",
    ("ThinkDiffVisionLoader", "vision_name"): "the vision-encoder files in `ComfyUI/models/thinkdiff`",
}
# What ComfyUI passes in a node's hidden inputs, for the page.
HIDDEN: dict[str, str] = {
    "unique_id": "The node's id, which ComfyUI passes so that the node shows its progress bar.",
}


def _type(spec: list) -> str:
    return "COMBO" if isinstance(spec[0], list) else str(spec[0])


def _code(value: Any) -> str:
    return f"`{value}`"


def _widget(node_id: str, name: str, spec: list) -> str:
    """What the page says about an input's widget: its default, range and step, multiline text, control after generate,
    and a combo's options (or, for a list of model files, where the list comes from)."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    parts = []
    if options.get("multiline"):
        parts.append("multiline")
    if "default" in options:
        parts.append("default empty" if options["default"] == "" else f"default {_code(options['default'])}")
    parts += [f"{key} {_code(options[key])}" for key in ("min", "max", "step") if key in options]
    if options.get("control_after_generate"):
        parts.append("control after generate")
    if _type(spec) == "COMBO":
        listed = spec[0] if isinstance(spec[0], list) else options.get("options")
        if (node_id, name) in MODEL_LISTS:
            parts.append(f"lists {MODEL_LISTS[node_id, name]}")
        elif not listed:
            raise ValueError(f"{node_id}.{name}: a combo without options that MODEL_LISTS does not describe")
        else:
            parts.append("one of " + ", ".join(map(_code, listed)))
    return "".join(f", {part}" for part in parts)


def page(node_id: str, spec: dict[str, Any]) -> str:
    notes = NOTES.get(node_id, {})
    lines = [f"# {spec['display_name']}", "", spec["description"], "", f"Category: {spec['category']}", "", "## Inputs", ""]
    for section in ("required", "optional"):
        for name, input_spec in spec["input"].get(section, {}).items():
            options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
            extra = " (optional)" if section == "optional" else ""
            tooltip = options.get("tooltip") or f"Connect a {_type(input_spec)} output here."
            lines.append(f"- `{name}` ({_type(input_spec)}{_widget(node_id, name, input_spec)}){extra}: {tooltip}")
    for name, input_spec in spec["input"].get("hidden", {}).items():
        lines.append(f"- `{name}` ({input_spec[0]}) (hidden): {HIDDEN[name]}")
    lines += ["", "## Outputs", ""]
    for name, kind in zip(spec["output_name"], spec["output"], strict=True):
        lines.append(f"- `{name}` ({kind}): {notes.get('outputs', {}).get(name, '')}".rstrip(": "))
    if notes.get("tips"):
        lines += ["", "## Tips", "", *[f"- {tip}" for tip in notes["tips"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        install_like_manager(Path(tmp), sys.executable)
        with ComfyServer(Path(tmp)) as server:
            info = server.object_info()
    DOCS.mkdir(parents=True, exist_ok=True)
    for node_id, spec in info.items():
        if spec["python_module"] == f"custom_nodes.{PACK_NAME}":
            path = DOCS / f"{node_id}.md"
            path.write_text(page(node_id, spec))
            print("wrote", path)


if __name__ == "__main__":
    main()
