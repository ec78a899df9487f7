"""GPU memory Qwen2-VL needs beside its weights while it thinks, for ComfyUI's ``load_models_gpu(memory_required=...)``.

- the KV cache: keys and values of every layer for the prompt and the answer (exact: transformers' cache holds these);
- the largest activations at one time: the prefill's MLP of one layer over the prompt, or the vision tower's over the
  image patches (an estimate: a few live tensors of those widths);
- the logits of one step in float32 and the sampler's working copy;
- for weights ComfyUI casts per forward (fp8, streamed layers), the largest weight in the working precision: fp8's
  ``lm_head`` or a streamed embedding is one such copy (1.09 GB in bf16 for Qwen2-VL-7B).

No torch import: the doctor uses it with Qwen2-VL-7B's shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CUDA_CONTEXT_BYTES = 400 * 10**6  # the CUDA context and cuBLAS workspace of the ComfyUI process (typical; not measured)


@dataclass(frozen=True)
class Shapes:
    """The widths of a Qwen2-VL that set its working memory."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    vision_width: int
    vision_mlp: int

    @classmethod
    def of(cls, config: Any) -> Shapes:
        text, vision = getattr(config, "text_config", config), config.vision_config
        return cls(text.num_hidden_layers, text.hidden_size, text.intermediate_size, text.num_attention_heads,
                   text.num_key_value_heads, text.vocab_size, vision.embed_dim, int(vision.embed_dim * vision.mlp_ratio))

    def kv_cache_bytes(self, tokens: int, batch: int, dtype_bytes: int) -> int:
        head_dim = self.hidden // self.heads
        return 2 * self.layers * self.kv_heads * head_dim * tokens * batch * dtype_bytes

    def think_bytes(self, prompt_tokens: int, new_tokens: int, vision_patches: int, batch: int, dtype_bytes: int) -> int:
        prefill = batch * prompt_tokens * (2 * self.intermediate + 4 * self.hidden) * dtype_bytes
        vision = vision_patches * (self.vision_mlp + 4 * self.vision_width) * dtype_bytes
        logits = 2 * batch * self.vocab * 4
        return self.kv_cache_bytes(prompt_tokens + new_tokens, batch, dtype_bytes) + max(prefill, vision) + logits


QWEN2_VL_7B = Shapes(layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4, vocab=152064, vision_width=1280,
                     vision_mlp=5120)
# The doctor's case: two 1-megapixel images (1,337 tokens each, 4 patches per token) and a short prompt, 128 tokens.
TYPICAL_PROMPT_TOKENS, TYPICAL_PATCHES, TYPICAL_NEW_TOKENS = 2 * 1337 + 64, 2 * 4 * 1337, 128


def typical_think_bytes(shapes: Shapes, casts_weights: bool, dtype_bytes: int = 2) -> int:
    """Working memory of the doctor's case and the CUDA context; with the largest cast weight (the embedding table's size:
    fp8's ``lm_head``) when the format casts weights per forward."""
    cast = shapes.vocab * shapes.hidden * dtype_bytes if casts_weights else 0
    return (shapes.think_bytes(TYPICAL_PROMPT_TOKENS, TYPICAL_NEW_TOKENS, TYPICAL_PATCHES, 1, dtype_bytes) + cast
            + CUDA_CONTEXT_BYTES)
