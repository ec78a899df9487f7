"""One TOML file per run, plus ``--set section.key=value`` overrides.

Defaults are the reference's settings (thinkdiff-reference.md sections 3.4, 4.2, 5); every value can
be changed. Sections mirror the dataclasses below: ``[run]``, ``[data]``, ``[precompute]``,
``[model]``, ``[train]``, ``[optim]``. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thinkdiff.errors import ThinkDiffError
from thinkdiff.images import REFERENCE_MAX_PIXELS, REFERENCE_MIN_PIXELS
from thinkdiff.run_config import ConfigFile, load_sections

Variant = Literal["lvlm", "clip"]

# The 16 instructions Qwen2-VL answers in stage A, drawn uniformly per image
# (cc_sbu_dataset_mllama_vllm_process_wids.py, ``llava_brief_instructions``).
REFERENCE_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
    "Generate a prompt that can recreate the image in a 2D diffusion model.",
    "Provide a descriptive prompt to reproduce the given image using a diffusion model.",
    "Create a prompt suitable for a 2D diffusion model to generate the same image.",
    "Summarize the visual details as a prompt for a 2D diffusion model.",
    "Write a clear prompt to guide a 2D diffusion model in recreating the image.",
)


@dataclass
class RunConfig:
    variant: Variant = "lvlm"
    output_dir: str = "runs/thinkdiff"
    seed: int = 42
    mixed_precision: Literal["bf16", "no"] = "bf16"  # bf16 autocast as the reference; no GradScaler either way


@dataclass
class SourceConfig:
    """One image-text dataset: a folder with a captions file, and/or WebDataset tar shards."""

    captions: str = ""  # .jsonl ({"image": relative path, "caption": text}) or .csv (columns image, caption)
    images: str = ""  # folder the captions file's image paths are relative to (default: the captions file's folder)
    shards: list[str] = field(default_factory=list)  # tar files or glob patterns (cc_sbu layout: KEY.jpg + KEY.txt/KEY.json)
    weight: float = 1.0  # share of the training steps drawn from this source (reference CLIP mix: LAION 115, CC/SBU 14)


@dataclass
class DataConfig:
    """Image-text pairs: one source given by ``captions``/``images``/``shards`` here, or several as ``[[data.sources]]``
    tables, each with a ``weight``. Each training step draws its whole batch from one source, with probability
    proportional to the weights (MiniGPT-4's MultiIterLoader, as the reference's CLIP run); stage A reads every source."""

    captions: str = ""
    images: str = ""
    shards: list[str] = field(default_factory=list)
    sources: list[SourceConfig] = field(default_factory=list)
    num_workers: int = 2

    def all_sources(self) -> list[SourceConfig]:
        single = SourceConfig(self.captions, self.images, list(self.shards))
        return self.sources or ([single] if single.captions or single.shards else [])


@dataclass
class PrecomputeConfig:
    """LVLM stage A: Qwen2-VL answers one instruction per image; its generated-token features are stored."""

    vlm: str = ""  # Qwen2-VL(-Instruct) Hugging Face folder
    features_dir: str = "features"
    backend: Literal["transformers", "vllm"] = "transformers"  # vllm: the same shards at an inference engine's speed
    vllm: dict[str, Any] = field(default_factory=dict)  # vLLM engine arguments, e.g. {tensor_parallel_size = 2}
    dtype: Literal["bf16", "fp32"] = "bf16"  # Qwen2-VL weights
    storage_dtype: Literal["bf16", "fp32"] = "bf16"  # stored features
    batch_size: int = 8  # requests per generate() call (transformers backend; vLLM takes a shard at a time)
    samples_per_shard: int = 1000
    max_new_tokens: int = 256
    temperature: float = 0.6
    top_p: float = 0.9
    greedy: bool = False
    min_pixels: int = REFERENCE_MIN_PIXELS  # the Qwen2-VL processor defaults the reference ran with
    max_pixels: int = REFERENCE_MAX_PIXELS
    instructions: list[str] = field(default_factory=lambda: list(REFERENCE_INSTRUCTIONS))
    progress_every_s: float = 30.0


@dataclass
class ModelConfig:
    t5: str = ""  # Flan-T5-XXL Hugging Face folder (model + tokenizer)
    t5_dtype: Literal["bf16", "fp32"] = "bf16"  # no fp16: it overflows in T5
    # The reference keeps the frozen T5 in train mode, so its dropout (0.1 in Flan-T5) is active while the
    # aligner learns. True reproduces that; False runs the frozen T5 deterministically (eval mode).
    t5_dropout: bool = True
    vision: str = ""  # CLIP variant: vision file from `python -m thinkdiff extract-vision` (tower, config, token grid)
    vision_dtype: Literal["bf16", "fp32"] = "bf16"
    aligner_hidden_dim: int = 0  # 0: the T5 width (4096 for XXL), as the reference


@dataclass
class TrainConfig:
    batch_size: int = 0  # per process; 0: the reference's, LVLM 32, CLIP 42
    max_steps: int = 0  # 0: the reference's, LVLM 25,000, CLIP 100,000
    max_split_tokens: int = 128  # LVLM: split s ~ U{1..min(L-1, this)}
    max_target_tokens: int = 0  # 0: the reference's 128 (LVLM) / 32 (CLIP)
    max_caption_words: int = 50  # CLIP caption cleaning
    log_every: int = 50
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05  # weight matrices only (ndim >= 2, name without bias/ln/bn)
    warmup_steps: int = 2000
    warmup_lr: float = 1e-6
    min_lr: float = 8e-5
    cosine_steps: int = 200_000  # cosine horizon (reference: 40 epochs x 5000 iterations), independent of max_steps


@dataclass
class Config(ConfigFile):
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    precompute: PrecomputeConfig = field(default_factory=PrecomputeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def _by_variant(self, value: int, lvlm: int, clip: int) -> int:
        return value or (lvlm if self.run.variant == "lvlm" else clip)

    @property
    def max_target_tokens(self) -> int:
        return self._by_variant(self.train.max_target_tokens, 128, 32)

    @property
    def batch_size(self) -> int:
        """Per process: the reference's 32 (LVLM) or 42 (CLIP) unless set."""
        return self._by_variant(self.train.batch_size, 32, 42)

    @property
    def max_steps(self) -> int:
        return self._by_variant(self.train.max_steps, 25_000, 100_000)



def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a TOML config (or only defaults) and apply ``section.key=value`` overrides."""
    config = load_sections(Config, path, overrides)
    if config.run.variant not in ("lvlm", "clip"):
        raise ThinkDiffError(f"[run] variant must be lvlm or clip, got {config.run.variant!r}")
    data = config.data
    if data.sources and (data.captions or data.images or data.shards):
        raise ThinkDiffError("[data]: give the data either as captions/images/shards or as [[data.sources]] tables, not both")
    if any(source.weight <= 0 for source in data.sources):
        raise ThinkDiffError("[data.sources] weights must be positive")
    if config.train.keep_checkpoints < 0:
        raise ThinkDiffError(f"[train] keep_checkpoints must be 0 (keep them all) or more, got {config.train.keep_checkpoints}")
    return config
