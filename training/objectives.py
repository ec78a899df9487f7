"""The two proxy tasks: examples (drawn per sample), batches, and the loss through the frozen T5.

LVLM (thinkdiff-reference.md 5.2): ``aligner(features[:s])`` -> T5 decoder -> CE on the T5 tokens of the
Qwen-decoded text of ``token_ids[s:]``. CLIP (4.2): ``[aligner(image tokens), T5 encoder(first part)]`` ->
decoder -> CE on the rest of the cleaned caption. Datasets are indexed by ``(epoch, index)`` so that each
sample's random draw comes from its own seeded generator (see ``masking``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from thinkdiff.vision import VisionTokenEncoder, preprocess_images

from .batching import SampleRef
from .feature_store import FeatureShards
from .masking import clean_caption, draw_split, sample_rng, split_caption, t5_labels, t5_tokens
from .pairs import PairDataset

Batch = dict[str, Any]


def lvlm_target_text(tokenizer: Any, token_ids: torch.Tensor, split: int) -> str:
    """The reference's target: Qwen's decoding of the generated ids from ``split`` on, special tokens dropped."""
    return tokenizer.decode(token_ids[split:].tolist(), skip_special_tokens=True)


@dataclass
class LVLMExample:
    features: torch.Tensor  # [s, H], the first s generated-token features
    target: str


class LVLMExamples(Dataset):
    """Stage A features with a split drawn per sample; ``None`` for answers shorter than 2 tokens."""

    def __init__(self, shards: FeatureShards, qwen_tokenizer: Any, seed: int, max_split: int) -> None:
        self.shards, self.tokenizer, self.seed, self.max_split = shards, qwen_tokenizer, seed, max_split

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, ref: SampleRef) -> LVLMExample | None:
        epoch, index = ref
        features, token_ids = self.shards[index]
        split = draw_split(sample_rng(self.seed, epoch, index), len(token_ids), self.max_split)
        if split is None:
            return None
        return LVLMExample(features[:split], lvlm_target_text(self.tokenizer, token_ids, split))


@dataclass
class CLIPExample:
    pixel_values: torch.Tensor  # [3, S, S]
    prefix: str
    target: str


@dataclass(frozen=True)
class PixelPreprocessor:
    """Picklable preprocessing for DataLoader workers: the library's exact resize and normalisation."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, encoder: VisionTokenEncoder) -> PixelPreprocessor:
        return cls(encoder.image_size, encoder.mean, encoder.std)

    def __call__(self, images: list) -> torch.Tensor:
        return preprocess_images(images, self.image_size, self.mean, self.std)


class CLIPExamples(Dataset):
    """Image-text pairs with the cleaned caption split at a random word; ``None`` for bad samples."""

    def __init__(self, pairs: PairDataset, preprocess: PixelPreprocessor, seed: int, max_words: int) -> None:
        self.pairs, self.preprocess, self.seed, self.max_words = pairs, preprocess, seed, max_words

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, ref: SampleRef) -> CLIPExample | None:
        epoch, index = ref
        pair = self.pairs[index]
        caption = clean_caption(pair.caption, self.max_words) if pair else ""
        if not caption:
            return None
        prefix, target = split_caption(sample_rng(self.seed, epoch, index), caption)
        return CLIPExample(self.preprocess([pair.image])[0], prefix, target)


@dataclass
class Collator:
    """Pads a list of examples into a batch; bad samples are dropped and counted under ``skipped``."""

    t5_tokenizer: Any
    max_target_tokens: int

    def __call__(self, examples: list[LVLMExample | CLIPExample | None]) -> Batch:
        kept = [e for e in examples if e is not None]
        batch: Batch = {"samples": len(kept), "skipped": len(examples) - len(kept)}
        if not kept:
            return batch
        batch["labels"], batch["decoder_attention_mask"] = t5_labels(self.t5_tokenizer, [e.target for e in kept], self.max_target_tokens)
        if isinstance(kept[0], LVLMExample):
            batch["features"] = pad_sequence([e.features.float() for e in kept], batch_first=True)
            batch["attention_mask"] = pad_sequence([torch.ones(len(e.features), dtype=torch.long) for e in kept], batch_first=True)
        else:
            batch["pixel_values"] = torch.stack([e.pixel_values for e in kept])
            batch["prefix_ids"], batch["prefix_mask"] = t5_tokens(self.t5_tokenizer, [e.prefix for e in kept], self.max_target_tokens)
        return batch


def move_batch(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class LVLMObjective:
    """Cross-entropy of the frozen T5 decoder reading the aligned prefix features."""

    def __init__(self, t5: nn.Module) -> None:
        self.t5 = t5

    def loss(self, aligner: nn.Module, batch: Batch) -> torch.Tensor:
        aligned = aligner(batch["features"])
        return self.t5(encoder_outputs=(aligned.to(self.t5.dtype),), attention_mask=batch["attention_mask"],
                       labels=batch["labels"], decoder_attention_mask=batch["decoder_attention_mask"]).loss


class CLIPObjective:
    """Cross-entropy of the frozen T5 decoder reading ``[aligned image tokens, T5 encoder(caption prefix)]``."""

    def __init__(self, t5: nn.Module, vision: VisionTokenEncoder) -> None:
        self.t5, self.vision = t5, vision

    def loss(self, aligner: nn.Module, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            image_tokens = self.vision(batch["pixel_values"])
            text = self.t5.encoder(input_ids=batch["prefix_ids"], attention_mask=batch["prefix_mask"]).last_hidden_state
        aligned = aligner(image_tokens.float()).to(text.dtype)
        image_mask = torch.ones(aligned.shape[:2], dtype=batch["prefix_mask"].dtype, device=aligned.device)
        return self.t5(encoder_outputs=(torch.cat([aligned, text], dim=1),),
                       attention_mask=torch.cat([image_mask, batch["prefix_mask"]], dim=1),
                       labels=batch["labels"], decoder_attention_mask=batch["decoder_attention_mask"]).loss
