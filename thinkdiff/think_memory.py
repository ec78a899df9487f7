"""GPU memory Qwen2-VL needs beside its weights while it thinks, for ComfyUI's ``load_models_gpu(memory_required=...)``.

- the KV cache: keys and values of every layer for the prompt and the answer (exact: transformers' cache holds these);
- the largest activations at one time: the prefill's MLP of one layer over the prompt, or the vision tower's over the
  image patches (an estimate: a few live tensors of those widths);
- the logits of one step in float32 and the sampler's working copy;
- for weights ComfyUI casts per forward (fp8, streamed layers), the largest weight in the working precision: fp8's
  ``lm_head`` or a streamed embedding is one such copy (1.09 GB in bf16 for Qwen2-VL-7B).

No torch import: the doctor uses it with Qwen2-VL-7B's shapes (``thinkdiff.qwen2_vl_sizes``).
"""

from __future__ import annotations

from .qwen2_vl_sizes import Shapes

CUDA_CONTEXT_BYTES = 400 * 10**6  # the CUDA context and cuBLAS workspace of the ComfyUI process (typical; not measured)


def kv_cache_bytes(shapes: Shapes, tokens: int, batch: int, dtype_bytes: int) -> int:
    return 2 * shapes.layers * shapes.kv_width * tokens * batch * dtype_bytes


def think_bytes(shapes: Shapes, prompt_tokens: int, new_tokens: int, vision_patches: int, batch: int,
                dtype_bytes: int) -> int:
    """The KV cache, the larger of the prefill's and the vision tower's activations, and one step's logits."""
    prefill = batch * prompt_tokens * (2 * shapes.intermediate + 4 * shapes.hidden) * dtype_bytes
    vision = vision_patches * (shapes.vision_mlp + 4 * shapes.vision_width) * dtype_bytes
    logits = 2 * batch * shapes.vocab * 4
    return kv_cache_bytes(shapes, prompt_tokens + new_tokens, batch, dtype_bytes) + max(prefill, vision) + logits


# The doctor's case: two 1-megapixel images (1,337 tokens each, 4 patches per token) and a short prompt, 128 tokens.
TYPICAL_PROMPT_TOKENS, TYPICAL_PATCHES, TYPICAL_NEW_TOKENS = 2 * 1337 + 64, 2 * 4 * 1337, 128


def typical_think_bytes(shapes: Shapes, casts_weights: bool, dtype_bytes: int = 2) -> int:
    """Working memory of the doctor's case and the CUDA context; with the largest cast weight (the embedding table's size:
    fp8's ``lm_head``) when the format casts weights per forward."""
    cast = shapes.vocab * shapes.hidden * dtype_bytes if casts_weights else 0
    return (think_bytes(shapes, TYPICAL_PROMPT_TOKENS, TYPICAL_NEW_TOKENS, TYPICAL_PATCHES, 1, dtype_bytes) + cast
            + CUDA_CONTEXT_BYTES)
