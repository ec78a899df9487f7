"""Tiny repositories in the real hubs' layouts, for the local hub (tests/support/local_hub.py).

- ``Qwen/Qwen2-VL-7B-Instruct``: the tiny Qwen2-VL folder, its weights re-sharded into two files with
  ``model.safetensors.index.json`` (as the real repo: five shards and an index), plus README.md / LICENSE / .gitattributes.
- ``Mifucius/ThinkDiff``: ``release/thinkdiff_{lvlm,clip}.pth`` written as the original's ``_save_checkpoint`` does
  (model with the frozen T5 embedding, AdamW state, config, scaler, epoch); the configs load them from ``.../release/``.
- ``Salesforce/blip2-flan-t5-xxl``: a BLIP-2 config and four shards: the vision tower split over shards 1 and 2
  (shard 2 also holds the Q-Former), shards 3 and 4 only language-model weights, and the index saying so.
- ``black-forest-labs/FLUX.1-dev`` (gated: files answer 401 without its token): flux1-dev / ae, and a diffusers
  ``transformer/`` file that must not be fetched.
- ``comfyanonymous/flux_text_encoders``: clip_l, t5xxl_fp16 and a t5xxl_fp8 that must not be fetched.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file
from transformers import Blip2Config, Blip2VisionModel

from tests.test_aligner_files import original_checkpoint

from .comfy_weights import FILES, TINY_T5, write_all
from .local_hub import Repo
from .tiny_models import TINY_VISION_TOWER, make_qwen2vl, random_aligner, tiny_vision_config, trained_looking

FLUX_TOKEN = "hf_test_flux_licence_accepted"
ALIGNER_WIDTHS = {"lvlm": (64, 16, 32), "clip": (TINY_VISION_TOWER["hidden_size"], 24, 32)}  # tiny Qwen / vision -> tiny T5
EXTRAS = {"README.md": b"# model card\n", "LICENSE": b"license text\n", ".gitattributes": b"*.safetensors filter=lfs\n"}


@dataclass
class TinyHub:
    repos: list[Repo]
    aligners: dict[str, torch.nn.Module]
    vision: dict[str, torch.Tensor]  # the BLIP-2 vision tower's state (no prefix), the extraction's reference
    taef1: dict[str, bytes]  # vae_approx files the tiny Flux workflows decode with (not a setup concern)


def shard(tensors: dict[str, torch.Tensor], groups: list[list[str]], prefix: str = "model") -> dict[str, bytes]:
    """Shard files and their index, as transformers' save_pretrained writes them."""
    files, weight_map = {}, {}
    for number, keys in enumerate(groups, 1):
        name = f"{prefix}-{number:05d}-of-{len(groups):05d}.safetensors"
        files[name] = save({k: tensors[k].contiguous() for k in keys}, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    files[f"{prefix}.safetensors.index.json"] = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                           indent=2).encode()
    return files


def qwen_repo(folder: Path) -> Repo:
    make_qwen2vl(folder)
    tensors = load_file(str(folder / "model.safetensors"))
    keys = sorted(tensors)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "model.safetensors"}
    files.update(shard(tensors, [keys[: len(keys) // 2], keys[len(keys) // 2:]]))
    return Repo("Qwen/Qwen2-VL-7B-Instruct", {**files, **EXTRAS})


def thinkdiff_repo() -> tuple[Repo, dict[str, torch.nn.Module]]:
    aligners, files = {}, dict(EXTRAS)
    for seed, (variant, (in_dim, hidden, out)) in enumerate(ALIGNER_WIDTHS.items()):
        aligners[variant] = random_aligner(in_dim, hidden, out, seed=seed + 3)
        buffer = io.BytesIO()
        torch.save(original_checkpoint(aligners[variant], variant), buffer)
        files[f"release/thinkdiff_{variant}.pth"] = buffer.getvalue()
    return Repo("Mifucius/ThinkDiff", files), aligners


def blip2_repo(folder: Path) -> tuple[Repo, dict[str, torch.Tensor]]:
    torch.manual_seed(7)
    vision = trained_looking(Blip2VisionModel(tiny_vision_config())).state_dict()
    config = Blip2Config(vision_config=tiny_vision_config().to_dict(),
                         qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                             encoder_hidden_size=TINY_VISION_TOWER["hidden_size"]),
                         text_config=dict(model_type="t5", vocab_size=96, **TINY_T5), num_query_tokens=4)
    config.save_pretrained(str(folder))
    tensors = {f"vision_model.{k}": v for k, v in vision.items()}
    vision_keys = sorted(tensors)
    tensors.update({"query_tokens": torch.randn(1, 4, 32), "qformer.layernorm.weight": torch.ones(32)})
    language = {f"language_model.encoder.block.{i}.layer.0.DenseReluDense.wi.weight": torch.randn(256, 512) for i in range(4)}
    tensors.update(language)
    half = len(vision_keys) // 2
    groups = [vision_keys[:half], vision_keys[half:] + ["query_tokens", "qformer.layernorm.weight"],
              sorted(language)[:2], sorted(language)[2:]]
    files = {"config.json": (folder / "config.json").read_bytes(), **shard(tensors, groups), **EXTRAS}
    return Repo("Salesforce/blip2-flan-t5-xxl", files), vision


def comfy_repos(models: Path) -> tuple[list[Repo], dict[str, bytes]]:
    write_all(models)
    read = {name: (models / path).read_bytes() for name, path in FILES.items() if (models / path).is_file()}
    flux = Repo("black-forest-labs/FLUX.1-dev", {
        "flux1-dev.safetensors": read["flux"], "ae.safetensors": save({"decoder.conv_in.weight": torch.randn(8, 16, 3, 3)}),
        "transformer/diffusion_pytorch_model.safetensors": read["flux"], **EXTRAS}, token=FLUX_TOKEN)
    encoders = Repo("comfyanonymous/flux_text_encoders", {
        "clip_l.safetensors": read["clip_l"], "t5xxl_fp16.safetensors": read["t5xxl"],
        "t5xxl_fp8_e4m3fn.safetensors": read["t5xxl"], **EXTRAS})
    taef1 = {p.name: p.read_bytes() for p in (models / "vae_approx").glob("*.safetensors")}
    return [flux, encoders], taef1


def build(scratch: Path) -> TinyHub:
    qwen = qwen_repo(scratch / "qwen")
    release, aligners = thinkdiff_repo()
    blip2, vision = blip2_repo(scratch / "blip2")
    comfy, taef1 = comfy_repos(scratch / "comfy_models")
    return TinyHub([qwen, release, blip2, *comfy], aligners, vision, taef1)


def save_vision_reference(hub: TinyHub, path: Path) -> Path:
    save_file({k: v.half() for k, v in hub.vision.items()}, str(path))
    return path
