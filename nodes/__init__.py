"""ComfyUI adapters for the ThinkDiff library (V3 node schema)."""

from comfy_api.latest import ComfyExtension, io

from .clip_nodes import (
    ThinkDiffCLIPFluxConditioning,
    ThinkDiffCogVideoXConditioning,
    ThinkDiffCogVideoXWrapperEmbeds,
    ThinkDiffImageEncode,
    ThinkDiffVisionLoader,
)
from .comfy_models import register_model_folders
from .conditioning_nodes import ThinkDiffAlignerLoader, ThinkDiffFluxConditioning
from .t5_nodes import ThinkDiffCLIPT5Conditioning, ThinkDiffT5Conditioning
from .vlm_nodes import ThinkDiffVLMEncode, ThinkDiffVLMLoader

NODES: list[type[io.ComfyNode]] = [
    ThinkDiffVLMLoader, ThinkDiffVLMEncode, ThinkDiffAlignerLoader, ThinkDiffFluxConditioning,
    ThinkDiffVisionLoader, ThinkDiffImageEncode, ThinkDiffCLIPFluxConditioning,
    ThinkDiffCogVideoXConditioning, ThinkDiffCogVideoXWrapperEmbeds, ThinkDiffT5Conditioning, ThinkDiffCLIPT5Conditioning,
]


register_model_folders()  # before any schema lists models/thinkdiff


class ThinkDiffExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES
