"""A stand-in for the parts of vLLM that stage A's phases call (``LLM``, ``SamplingParams``, ``PoolingParams``,
``vllm.inputs.TokensPrompt``), for tests/training/test_vllm_phases.py. With ``tests/support/vllm_stand_in`` first on
``sys.path``, ``import vllm`` finds it, in a test's process and in the phases' spawned ones.

Its engines answer each request with a known function of that request, so a test can tell which sample got which
answer and which rows:
- ``generate``: 1 .. ``max_tokens`` answer tokens from the seed, the prompt's length and the image's size
  (:func:`answer_tokens`);
- the pooling engine: the state of position p of prompt + answer, after the image placeholder's expansion into one
  position per 28 x 28 pixels (as Qwen2-VL's merged patches), holds p, the token id at p, the image's width and height,
  then 0, 1, 2, ... (:func:`states`). Requests finish newest first, a step's outputs view one batch tensor (as vLLM's
  do), and requests still running come back unfinished.
Each ``LLM`` made is recorded in ``LLM.made``, each generation request in ``LLM.generated``; ``generate`` draws
vLLM's progress bar on stderr unless ``use_tqdm`` is false. An ``LLM`` refuses what vLLM refuses: a generation call on
a pooling engine and the other way round, a pooling task other than ``token_embed``, and (as CUDA does) a start in a
process forked from one that had imported it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from PIL import Image
from transformers import AutoConfig

from thinkdiff.images import QWEN_PATCH_FACTOR

__version__ = "stand-in"
IMPORTED_IN = os.getpid()
PIXELS_PER_POSITION = QWEN_PATCH_FACTOR**2  # one merged patch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_p: float
    max_tokens: int
    min_tokens: int
    ignore_eos: bool
    stop_token_ids: list[int]
    seed: int


@dataclass(frozen=True)
class PoolingParams:
    task: str


def answer_tokens(prompt: dict[str, Any], params: SamplingParams) -> list[int]:
    """Ordinary tokens, then (when shorter than ``max_tokens``) the first stop token, which vLLM's answers include."""
    width, height = _image(prompt).size
    count = max(params.min_tokens, 1 + (params.seed + width + len(prompt["prompt_token_ids"])) % params.max_tokens)
    tokens = [1000 + (params.seed * 31 + width * 7 + height + k) % 20000 for k in range(count)]
    return tokens if count == params.max_tokens else tokens[:-1] + params.stop_token_ids[:1]


def expanded_ids(prompt: dict[str, Any], image_token_id: int) -> list[int]:
    """The prompt's ids with its one image placeholder repeated once per 28 x 28 pixels of its image."""
    width, height = _image(prompt).size
    ids = prompt["prompt_token_ids"]
    at = ids.index(image_token_id)
    return ids[:at] + [image_token_id] * (width * height // PIXELS_PER_POSITION) + ids[at + 1:]


def states(prompt: dict[str, Any], image_token_id: int, hidden_size: int) -> torch.Tensor:
    ids = expanded_ids(prompt, image_token_id)
    width, height = _image(prompt).size
    rows = torch.arange(hidden_size, dtype=torch.float32).repeat(len(ids), 1)
    rows[:, :4] = torch.tensor([[p, token, width, height] for p, token in enumerate(ids)], dtype=torch.float32)
    return rows


def _image(prompt: dict[str, Any]) -> Image.Image:
    image = prompt["multi_modal_data"]["image"]
    if not isinstance(image, Image.Image):
        raise TypeError(f"the stand-in takes one PIL image per prompt, not {type(image).__name__}")
    return image


class LLM:
    made: list[LLM] = []
    generated: list[tuple[dict[str, Any], SamplingParams]] = []

    def __init__(self, **arguments: Any) -> None:
        if os.getpid() != IMPORTED_IN:
            raise RuntimeError("cannot re-initialize CUDA in a forked subprocess: start the engine in a spawned process")
        LLM.made.append(self)
        self.arguments = arguments
        config = AutoConfig.from_pretrained(arguments["model"], local_files_only=True)
        self.image_token_id, self.hidden_size = config.image_token_id, config.get_text_config().hidden_size
        self.engine = PoolingEngine(self)

    def generate(self, prompts: list[dict[str, Any]], params: list[SamplingParams], use_tqdm: bool = True) -> list[Any]:
        if self.arguments.get("runner") == "pooling":
            raise ValueError("LLM.generate() is only supported for generative models")
        if len(prompts) != len(params) or not prompts:
            raise ValueError(f"{len(prompts)} prompts and {len(params)} sampling parameters")
        LLM.generated.extend(zip(prompts, params, strict=True))
        if use_tqdm:
            print(f"Processed prompts: 100%|{'#' * 10}| {len(prompts)}/{len(prompts)}", file=sys.stderr)
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=tuple(answer_tokens(prompt, p)))])
                for prompt, p in zip(prompts, params, strict=True)]

    @property
    def llm_engine(self) -> PoolingEngine:
        if self.arguments.get("runner") != "pooling":
            raise ValueError("the stand-in's engine pools: make the LLM with runner='pooling'")
        return self.engine


class PoolingEngine:
    """``add_request`` / ``has_unfinished_requests`` / ``step``; ``in_flight`` records the requests at each step."""

    def __init__(self, llm: LLM) -> None:
        self.llm, self.running, self.in_flight = llm, [], []

    def add_request(self, request_id: str, prompt: dict[str, Any], params: PoolingParams) -> None:
        if params.task != "token_embed":
            raise ValueError(f"pooling task {params.task!r} is not supported by this model")
        self.running.append((request_id, states(prompt, self.llm.image_token_id, self.llm.hidden_size)))

    def has_unfinished_requests(self) -> bool:
        return bool(self.running)

    def step(self) -> list[Any]:
        self.in_flight.append(len(self.running))
        batch = torch.zeros(len(self.running), max(len(s) for _, s in self.running), self.llm.hidden_size)
        outputs = []
        for row, (request_id, request_states) in enumerate(self.running):
            batch[row, :len(request_states)] = request_states
            data = batch[row, :len(request_states)] if row == len(self.running) - 1 else None
            outputs.append(SimpleNamespace(request_id=request_id, finished=data is not None, outputs=SimpleNamespace(data=data)))
        self.running.pop()
        return outputs
