"""An independent reference for the VLM's features: one forward of the model over prompt + answer (no generation)."""

from __future__ import annotations

import torch

from thinkdiff.vlm import QwenVLEncoder, final_norm


def prefill_states(encoder: QwenVLEncoder, inputs: dict[str, torch.Tensor], answer: torch.Tensor) -> torch.Tensor:
    """The final-norm state of every position of one prepared prompt (``encoder.prepare``) followed by ``answer``'s
    tokens; rows P-1 .. P+N-2 are those that sampled the answer (P prompt positions, N answer tokens)."""
    answer = answer[None]
    appended = {"input_ids": answer, "attention_mask": torch.ones_like(answer), "mm_token_type_ids": torch.zeros_like(answer)}
    sequence = {name: torch.cat([value, appended[name]], dim=1) if name in appended else value for name, value in inputs.items()}
    states: list[torch.Tensor] = []
    handle = final_norm(encoder.model).register_forward_hook(lambda _module, _inputs, output: states.append(output[0]))
    try:
        with torch.no_grad():
            encoder.model(**sequence)
    finally:
        handle.remove()
    return states[0]
