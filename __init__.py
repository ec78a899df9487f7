"""ComfyUI-ThinkDiff: ThinkDiff ("I Think, Therefore I Diffuse", ICML 2025) for ComfyUI.

Inside ComfyUI this registers the V3 nodes; elsewhere (training, tests, the CLI) only the
``thinkdiff`` library is used and nothing from ComfyUI is imported.
"""

WEB_DIRECTORY = "./web"  # node help pages (web/docs/<NodeId>.md), served under /extensions/<folder>/

try:
    import comfy_api.latest  # noqa: F401
except ImportError:  # not running inside ComfyUI
    pass
else:
    from .nodes import ThinkDiffExtension

    async def comfy_entrypoint() -> ThinkDiffExtension:
        return ThinkDiffExtension()
