"""Generation settings (:class:`SamplingOptions`) and the ``model.generate`` arguments they make: a complete
``GenerationConfig``, sampled by :class:`~thinkdiff.sampling.TopPSampler`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import GenerationConfig, LogitsProcessorList

from .errors import ThinkDiffError
from .sampling import FiniteLogits, TopPSampler


@dataclass(frozen=True)
class SamplingOptions:
    """Generation settings; the defaults are the paper's inference settings.

    ``stop_at_eos=False`` keeps sampling past end-of-sequence, as the reference does (vLLM
    ``min_tokens = max_tokens = 128, ignore_eos``), so every answer has exactly ``max_new_tokens`` rows.
    """

    max_new_tokens: int = 128
    temperature: float = 0.6
    top_p: float = 0.9
    greedy: bool = False
    stop_at_eos: bool = False
    seed: int = 42

    def generation_config(self, eos_token_id: int | list[int], pad_token_id: int) -> GenerationConfig:
        """A complete config, so nothing leaks in from a model folder's ``generation_config.json``."""
        if self.max_new_tokens < 1:
            raise ThinkDiffError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not self.greedy and (self.temperature <= 0 or not 0 < self.top_p <= 1):
            raise ThinkDiffError(f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {self.temperature}, {self.top_p}); "
                                 "switch greedy on for deterministic decoding")
        sample = {} if self.greedy else {"temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=1 if self.stop_at_eos else self.max_new_tokens,
            do_sample=not self.greedy, repetition_penalty=1.0, num_beams=1,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, **sample)

    def generate_kwargs(self, eos_token_id: int | list[int], pad_token_id: int, prompt_length: int) -> dict[str, Any]:
        """``model.generate`` arguments for :meth:`generation_config`'s distribution, sampled by :class:`TopPSampler`
        (exact top-p without sorting the vocabulary; transformers' sampling stays the reference)."""
        config = self.generation_config(eos_token_id, pad_token_id)
        if self.greedy:
            return {"generation_config": config, "logits_processor": LogitsProcessorList([FiniteLogits()])}
        sampler = TopPSampler(self.temperature, self.top_p, prompt_length, config.min_new_tokens,
                              eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
        config.update(do_sample=False, temperature=None, top_p=None, top_k=None, min_new_tokens=None)
        return {"generation_config": config, "logits_processor": LogitsProcessorList([sampler])}


PAPER_SAMPLING = SamplingOptions()
