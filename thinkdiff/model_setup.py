"""The model files ThinkDiff workflows use: where each goes, where to get it, and the setup text users see.

One catalogue for the doctor (``python -m thinkdiff doctor``), the loader nodes' error messages, docs/models.md and the
setup tool (``python -m thinkdiff setup``, in ``hub_setup/``), which reads ``fetch`` to know how each entry is obtained.
Nothing here downloads or touches the network; it only describes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vram_advice import QWEN2_VL_7B_GB

ALIGNER_RELEASE_URL = "https://huggingface.co/Mifucius/ThinkDiff"
CONVERT_COMMAND = "python -m thinkdiff convert-aligner"
EXTRACT_COMMAND = "python -m thinkdiff extract-vision"
SETUP_COMMAND = "python -m thinkdiff setup"
HUB = "https://huggingface.co/"
# How the setup tool obtains an entry: a Hugging Face folder (its allow-listed files), one file (from a /resolve/ URL), a
# release checkpoint converted to .safetensors, BLIP-2's vision tower extracted from the shards that hold it; "" = by hand.
FETCH_KINDS = ("folder", "file", "release", "vision", "")
FLUX_LICENCE = "FLUX.1 [dev] Non-Commercial License (gated: accept it on the model page first)"
COGVIDEOX_URL = "https://huggingface.co/THUDM/CogVideoX-5b"
COGVIDEOX_LICENCE = "CogVideoX License (THUDM)"
COGVIDEOX_HOW = f"needs ComfyUI 0.21 or newer (native CogVideoX); single-file weights of {COGVIDEOX_URL}"
SD35_LICENCE = "Stability AI Community License (gated: accept it on the model page first)"


@dataclass(frozen=True)
class ModelFile:
    """One model file (or Hugging Face folder) a workflow needs, relative to ``ComfyUI/models``."""

    name: str
    folder: str
    what: str
    size: str
    url: str
    licence: str
    how: str = ""  # how to obtain it when a plain download is not enough
    is_folder: bool = False
    fetch: str = ""  # one of FETCH_KINDS
    release_file: str = ""  # for fetch="release": the checkpoint's file name in the repository

    @property
    def repo_id(self) -> str:
        """The Hugging Face repository of ``url`` ("" when it is not a hub URL)."""
        if not self.url.startswith(HUB):
            return ""
        parts = self.url.removeprefix(HUB).split("/")
        return "/".join(parts[:2])

    @property
    def hub_file(self) -> str:
        """The file a ``/resolve/<revision>/`` URL names ("" for a repository page)."""
        parts = self.url.removeprefix(HUB).split("/")
        return "/".join(parts[4:]) if len(parts) > 4 and parts[2] == "resolve" else ""

    @property
    def setup_command(self) -> str:
        """The one command that fetches this entry, or "" when it must be obtained by hand."""
        return f"{SETUP_COMMAND} --model {self.name}" if self.fetch else ""

    @property
    def destination(self) -> str:
        return f"ComfyUI/models/{self.folder}/{self.name}" + ("/" if self.is_folder else "")

    def guidance(self) -> str:
        """One paragraph: what it is, where it goes, where to get it."""
        fetch = f" Fetch it: `{self.setup_command}` (in ComfyUI/custom_nodes/ComfyUI-ThinkDiff)." if self.setup_command else ""
        get = f" {'By hand' if fetch else 'Get it'}: {self.how}." if self.how else ""
        return f"{self.what}: put it at {self.destination} ({self.size}). Source: {self.url}.{fetch}{get} Licence: {self.licence}."


CATALOGUE: tuple[ModelFile, ...] = (
    ModelFile("Qwen2-VL-7B-Instruct", "LLM", "Qwen2-VL-7B-Instruct, the VLM that thinks (whole Hugging Face folder)",
              f"{QWEN2_VL_7B_GB['default']} GB (bf16)", "https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct", "Apache-2.0",
              "`huggingface-cli download Qwen/Qwen2-VL-7B-Instruct --local-dir ComfyUI/models/LLM/Qwen2-VL-7B-Instruct`",
              is_folder=True, fetch="folder"),
    ModelFile("thinkdiff_lvlm.safetensors", "thinkdiff", "ThinkDiff-LVLM aligner (3584 -> 4096 -> 4096)", "126 MB (fp32)",
              ALIGNER_RELEASE_URL, "not stated on the model card (research release)",
              f"download thinkdiff_lvlm.pth from {ALIGNER_RELEASE_URL}, then "
              f"`{CONVERT_COMMAND} thinkdiff_lvlm.pth ComfyUI/models/thinkdiff/thinkdiff_lvlm.safetensors`",
              fetch="release", release_file="thinkdiff_lvlm.pth"),
    ModelFile("thinkdiff_clip.safetensors", "thinkdiff", "ThinkDiff-CLIP aligner (1408 -> 4096 -> 4096)", "90 MB (fp32)",
              ALIGNER_RELEASE_URL, "not stated on the model card (research release)",
              f"download thinkdiff_clip.pth from {ALIGNER_RELEASE_URL}, then "
              f"`{CONVERT_COMMAND} thinkdiff_clip.pth ComfyUI/models/thinkdiff/thinkdiff_clip.safetensors`",
              fetch="release", release_file="thinkdiff_clip.pth"),
    ModelFile("blip2_vision.safetensors", "thinkdiff", "BLIP-2 EVA ViT-g/14 vision tower, ThinkDiff-CLIP's image encoder",
              "2.0 GB (fp16; cut from the much larger BLIP-2 download)", "https://huggingface.co/Salesforce/blip2-flan-t5-xxl", "MIT",
              "download the Salesforce/blip2-flan-t5-xxl folder anywhere, then "
              f"`{EXTRACT_COMMAND} BLIP2_FOLDER ComfyUI/models/thinkdiff/blip2_vision.safetensors` (the folder can go afterwards)",
              fetch="vision"),
    ModelFile("flux1-dev.safetensors", "diffusion_models", "FLUX.1-dev diffusion model", "23.8 GB (bf16)",
              "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors", FLUX_LICENCE, fetch="file"),
    ModelFile("clip_l.safetensors", "text_encoders", "CLIP-L text encoder (Flux pooled vector; SD3.5)", "246 MB",
              "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "MIT", fetch="file"),
    ModelFile("t5xxl_fp16.safetensors", "text_encoders",
              "T5-XXL text encoder (Flux, SD3.5, Chroma, LTX-Video, CogVideoX); t5xxl_fp8_e4m3fn.safetensors also works", "9.8 GB (fp16)", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
              "Apache-2.0", fetch="file"),
    ModelFile("ae.safetensors", "vae", "FLUX.1 autoencoder (Flux, Chroma)", "335 MB",
              "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors", FLUX_LICENCE, fetch="file"),
    ModelFile("clip_g.safetensors", "text_encoders", "CLIP-G text encoder (SD3.5's, with clip_l and t5xxl)", "1.39 GB",
              "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/text_encoders/clip_g.safetensors",
              "see the model page (from Stability AI's SD3.5 release)", fetch="file"),
    ModelFile("sd3.5_large.safetensors", "checkpoints", "Stable Diffusion 3.5 Large (MMDiT and VAE; text encoders apart)",
              "16.5 GB (bf16)",
              "https://huggingface.co/stabilityai/stable-diffusion-3.5-large/resolve/main/sd3.5_large.safetensors",
              SD35_LICENCE, fetch="file"),
    ModelFile("Chroma1-HD.safetensors", "diffusion_models", "Chroma1-HD diffusion model (8.9 B, Flux.1-schnell based)",
              "17.8 GB (bf16)", "https://huggingface.co/lodestones/Chroma1-HD/resolve/main/Chroma1-HD.safetensors",
              "Apache-2.0", fetch="file"),
    ModelFile("ltx-video-2b-v0.9.5.safetensors", "checkpoints", "LTX-Video 2B v0.9.5 (transformer and VAE)", "about 6 GB",
              "https://huggingface.co/Lightricks/LTX-Video/resolve/main/ltx-video-2b-v0.9.5.safetensors",
              "LTX-Video's licence for 0.9.5 (see the model page)", fetch="file"),
    ModelFile("cogvideox_5b_bf16.safetensors", "diffusion_models", "CogVideoX-5b transformer as one ComfyUI diffusion-model file",
              "about 11 GB (bf16)", COGVIDEOX_URL, COGVIDEOX_LICENCE, COGVIDEOX_HOW),
    ModelFile("cogvideox_vae.safetensors", "vae", "CogVideoX VAE as one ComfyUI VAE file", "about 0.4 GB", COGVIDEOX_URL,
              COGVIDEOX_LICENCE, COGVIDEOX_HOW),
)
BY_NAME = {entry.name: entry for entry in CATALOGUE}
DEFAULT_VLM = BY_NAME["Qwen2-VL-7B-Instruct"]


def describe(name: str, folder: str, url: str = "", is_folder: bool = False) -> ModelFile:
    """The catalogue entry for ``name``, or a minimal one built from what a workflow says about it."""
    known = BY_NAME.get(name)
    if known is not None and known.folder == folder:
        return known
    return ModelFile(name, folder, name, "unknown size", url or "(no download link in the workflow)", "see the download page",
                     is_folder=is_folder)


def missing_message(name: str, folder: str, searched: list[str]) -> str:
    """The loaders' error text for a model that is not there: the setup guidance of that file, or of every file that belongs
    in ``folder`` when the name is not a known one."""
    known = BY_NAME.get(name)
    entries = [known] if known is not None and known.folder == folder else [e for e in CATALOGUE if e.folder == folder]
    where = ", ".join(searched) or f"ComfyUI/models/{folder}"
    hints = " ".join(entry.guidance() for entry in entries)
    return f"{name!r} not found in {where}. {hints} Run `python -m thinkdiff doctor` to check every workflow's files."
