"""The precision names users choose from (nodes, CLI, configs, benchmarks)."""

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
