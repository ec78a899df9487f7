"""The sizes of Qwen2-VL-Instruct (2B and 7B, from their ``config.json``): the one source for every figure the pack
derives from them, the stored bytes of each weight format (the doctor, the VLM loader's refusal, the docs), the working
memory of a think (``thinkdiff.think_memory``) and the random real-size models of the benchmarks and the GPU check.

The byte counts are computed layer by layer, as each format stores them (``thinkdiff.weight_formats``): the tests
compare them with the bytes a loaded model really holds, at several tiny widths. No torch import.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

NF4_BLOCK = 64  # bitsandbytes' 4-bit block: one float32 absmax per 64 weights, and a 16-entry float32 code per layer
NF4_CODE_BYTES = 16 * 4


@dataclass(frozen=True)
class Linear:
    """One Linear layer: its widths, whether it has a bias, and where it sits (``language``, ``head``, ``vision``)."""

    fan_in: int
    fan_out: int
    bias: bool
    part: str


@dataclass(frozen=True)
class Shapes:
    """The widths of a Qwen2-VL that set its size and its working memory."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool  # lm_head is the embedding table (2B) or a weight of its own (7B)
    vision_depth: int = 32
    vision_width: int = 1280
    vision_heads: int = 16
    vision_mlp_ratio: int = 4
    patch: int = 14
    temporal_patch: int = 2
    merge: int = 2
    mrope_section: tuple[int, int, int] = (16, 24, 24)

    @classmethod
    def of(cls, config: Any) -> Shapes:
        """The shapes of a transformers ``Qwen2VLConfig`` (4.x puts the text settings at the top level, 5.x in
        ``text_config``)."""
        text, vision = getattr(config, "text_config", config), config.vision_config
        tied = bool(config.tie_word_embeddings)  # at the top level in both (5.x copies a text_config's value there)
        section = (text.rope_scaling or {}).get("mrope_section", cls.mrope_section)
        return cls(text.num_hidden_layers, text.hidden_size, text.intermediate_size, text.num_attention_heads,
                   text.num_key_value_heads, text.vocab_size, tied, vision.depth, vision.embed_dim, vision.num_heads,
                   int(vision.mlp_ratio), vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size,
                   tuple(section))

    @property
    def vision_mlp(self) -> int:
        return self.vision_width * self.vision_mlp_ratio

    @property
    def kv_width(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def text_config(self) -> dict[str, Any]:
        """``config.json``'s language-model fields."""
        return dict(hidden_size=self.hidden, intermediate_size=self.intermediate, num_hidden_layers=self.layers,
                    num_attention_heads=self.heads, num_key_value_heads=self.kv_heads, vocab_size=self.vocab,
                    tie_word_embeddings=self.tied, rope_scaling={"type": "mrope", "mrope_section": list(self.mrope_section)})

    def vision_config(self) -> dict[str, Any]:
        """``config.json``'s ``vision_config``."""
        return dict(depth=self.vision_depth, embed_dim=self.vision_width, num_heads=self.vision_heads,
                    mlp_ratio=self.vision_mlp_ratio, hidden_size=self.hidden, patch_size=self.patch,
                    spatial_merge_size=self.merge, temporal_patch_size=self.temporal_patch)

    def linears(self) -> Iterator[Linear]:
        h, e, merged = self.hidden, self.vision_width, self.vision_width * self.merge**2
        for _ in range(self.layers):
            yield from (Linear(h, h, True, "language"), Linear(h, self.kv_width, True, "language"),
                        Linear(h, self.kv_width, True, "language"), Linear(h, h, False, "language"))
            yield from (Linear(h, self.intermediate, False, "language"), Linear(h, self.intermediate, False, "language"),
                        Linear(self.intermediate, h, False, "language"))
        if not self.tied:
            yield Linear(h, self.vocab, False, "head")
        for _ in range(self.vision_depth):
            yield from (Linear(e, 3 * e, True, "vision"), Linear(e, e, True, "vision"),
                        Linear(e, self.vision_mlp, True, "vision"), Linear(self.vision_mlp, e, True, "vision"))
        yield from (Linear(merged, merged, True, "vision"), Linear(merged, h, True, "vision"))

    def other_parameters(self) -> int:
        """Parameters outside the Linear layers: the embedding table, the RMSNorms, the vision tower's patch
        embedding and LayerNorms."""
        patch = self.vision_width * 3 * self.temporal_patch * self.patch**2
        return (self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden + patch
                + self.vision_depth * 4 * self.vision_width + 2 * self.vision_width)

    def parameters(self) -> int:
        return self.other_parameters() + sum(x.fan_in * x.fan_out + x.bias * x.fan_out for x in self.linears())

    def weight_bytes(self, weights: str, dtype_bytes: int = 2) -> int:
        """Bytes the model stores in ``weights`` (``thinkdiff.weight_formats``) with ``dtype_bytes`` per unquantized
        value: fp8 keeps the language model's Linear weights (and an untied ``lm_head``) in one byte with a float32
        scale per row; bitsandbytes quantizes every Linear but ``lm_head``, 8-bit with a float32 scale per row, NF4
        with a float32 absmax per block of 64 and its code. Biases stay in the working precision."""
        total = self.other_parameters() * dtype_bytes
        for x in self.linears():
            total += x.bias * x.fan_out * dtype_bytes + _linear_weight_bytes(x, weights, dtype_bytes)
        return total


def _linear_weight_bytes(linear: Linear, weights: str, dtype_bytes: int) -> int:
    numel = linear.fan_in * linear.fan_out
    if weights == "fp8_e4m3fn" and linear.part != "vision":
        return numel + 4 * linear.fan_out
    if weights == "bnb_8bit" and linear.part != "head":
        return numel + 4 * linear.fan_out
    if weights == "bnb_nf4" and linear.part != "head":
        return math.ceil(numel / 2) + 4 * math.ceil(numel / NF4_BLOCK) + NF4_CODE_BYTES
    return numel * dtype_bytes


QWEN2_VL = {
    "2b": Shapes(layers=28, hidden=1536, intermediate=8960, heads=12, kv_heads=2, vocab=151936, tied=True),
    "7b": Shapes(layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4, vocab=152064, tied=False),
}
QWEN2_VL_7B = QWEN2_VL["7b"]
