"""The CoBSAT run config: one TOML file plus ``--set section.key=value`` overrides (as ``training``).

Defaults are the paper's settings (thinkdiff-reference.md 3.4, 3.5, 7.2) and CoBSAT's protocol (LLaVA-1.5-13B judge,
temperature 0, 512 new tokens; CLIP ViT-B/32). Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from thinkdiff.errors import ThinkDiffError
from thinkdiff.images import REFERENCE_MAX_PIXELS, REFERENCE_MIN_PIXELS
from thinkdiff.run_config import ConfigFile, load_sections

from .prompt import INSTRUCTION
from .protocol import PROMPTS_PER_TASK
from .samples import Sample, build_samples, check_selection, read_samples

Backend = Literal["diffusers", "comfyui", "oracle", "random"]
JudgeModel = Literal["llava", "qwen2vl", "rules"]


@dataclass
class RunConfig:
    output_dir: str = "cobsat_run"  # images/, scores/, report/ and the samples file go here
    tasks: list[int] = field(default_factory=lambda: list(range(1, 11)))
    shots: list[int] = field(default_factory=lambda: [2, 4])
    samples_per_task: int = PROMPTS_PER_TASK  # the first N prompt-list entries (1000: the full benchmark)
    seed: int = 42  # sample i: seed + i (its Flux noise, and the VLM sampling of the batch it starts)
    shard_index: int = 0  # independent jobs: this one takes every num_shards-th batch (times Accelerate processes)
    num_shards: int = 1


@dataclass
class DataConfig:
    prompt_list: str = ""  # CoBSAT's load_datasets/prompts_list_default.json
    dataset_root: str = ""  # CoBSAT's datasets/ folder ({detail_space}_{object}/{detail}_{object}.jpg)
    samples: str = ""  # a samples .jsonl (default: OUTPUT_DIR/samples.jsonl, written from the prompt list when missing)


@dataclass
class GenerateConfig:
    backend: Backend = "diffusers"
    batch_size: int = 8  # samples per VLM batch (diffusers) / prompts queued at once (comfyui)
    instruction: str = INSTRUCTION
    max_new_tokens: int = 128
    temperature: float = 0.6
    top_p: float = 0.9
    min_pixels: int = REFERENCE_MIN_PIXELS  # Qwen2-VL's pixel budget per image
    max_pixels: int = REFERENCE_MAX_PIXELS
    width: int = 512
    height: int = 512
    steps: int = 28
    guidance: float = 3.5
    progress_every_s: float = 30.0


@dataclass
class DiffusersConfig:
    vlm: str = ""  # Qwen2-VL-7B-Instruct folder
    aligner: str = ""  # ThinkDiff-LVLM aligner (.safetensors, or a release .pth holding only tensors)
    flux: str = ""  # FLUX.1-dev diffusers folder (transformer, vae, text_encoder + tokenizer for the pooled CLIP-L(""))
    vlm_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    flux_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    device: str = "auto"  # auto: this process's GPU (Accelerate), else the CPU
    cpu_offload: bool = False  # Flux components move to the GPU only while they run (GPUs under ~48 GB)


@dataclass
class ComfyUIConfig:
    url: str = "http://127.0.0.1:8188"
    workflow: str = ""  # a UI-format workflow (default: this pack's workflows/thinkdiff_lvlm_in_context.json)
    vlm: str = ""  # model names as ComfyUI lists them; "" keeps the workflow's
    aligner: str = ""
    unet: str = ""
    clip_l: str = ""
    t5: str = ""
    vae: str = ""
    timeout_s: float = 1800.0  # per prompt


@dataclass
class JudgeConfig:
    model: JudgeModel = "llava"  # llava: LLaVA-1.5 (llava-hf format), the paper's judge; rules: synthetic colour data only
    folder: str = ""  # llava-hf/llava-1.5-13b-hf (or a Qwen2-VL-Instruct folder for qwen2vl)
    dtype: Literal["bf16", "fp16", "fp32"] = "fp16"  # LLaVA-1.5 ran in fp16
    batch_size: int = 8  # questions per generate() call
    max_new_tokens: int = 512
    clip: str = ""  # openai/clip-vit-base-patch32 folder; "" leaves the CLIP metric out
    device: str = "auto"


@dataclass
class ReportConfig:
    label: str = "ThinkDiff-LVLM (this run)"


@dataclass
class EvalConfig(ConfigFile):
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    diffusers: DiffusersConfig = field(default_factory=DiffusersConfig)
    comfyui: ComfyUIConfig = field(default_factory=ComfyUIConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def output_dir(self) -> Path:
        return self.path(self.run.output_dir)

    @property
    def samples_file(self) -> Path:
        return self.path(self.data.samples) if self.data.samples else self.output_dir / "samples.jsonl"

    @property
    def dataset_root(self) -> Path:
        if not self.data.dataset_root:
            raise ThinkDiffError("set [data] dataset_root to CoBSAT's datasets/ folder")
        return self.path(self.data.dataset_root)

    def samples(self) -> list[Sample]:
        """The selected samples: from the samples file when there is one, else built from the prompt list."""
        run = self.run
        if self.samples_file.is_file():
            wanted = set(run.tasks), set(run.shots)
            return [s for s in read_samples(self.samples_file) if s.task in wanted[0] and s.shot in wanted[1]
                    and s.index < run.samples_per_task]
        if not self.data.prompt_list:
            raise ThinkDiffError(f"no samples file at {self.samples_file}: set [data] prompt_list to CoBSAT's "
                                 "load_datasets/prompts_list_default.json (or [data] samples to a samples .jsonl)")
        return build_samples(self.path(self.data.prompt_list), run.tasks, run.shots, run.samples_per_task)



def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> EvalConfig:
    config = load_sections(EvalConfig, path, overrides)
    run = config.run
    check_selection(run.tasks, run.shots, run.samples_per_task)
    if not 0 <= run.shard_index < run.num_shards:
        raise ThinkDiffError(f"[run] shard_index must be 0..num_shards-1, got {run.shard_index} of {run.num_shards}")
    if config.generate.batch_size < 1 or config.judge.batch_size < 1:
        raise ThinkDiffError("batch sizes must be at least 1")
    return config
