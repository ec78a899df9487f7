"""Run a shipped workflow in a real, headless ComfyUI with tiny random models; write its image and text.

    python scripts/run_demo.py [WORKFLOW] [--out demo_output]

The ComfyUI base directory is .dev/demo (kept, so it can be opened later with
`cd .dev/ComfyUI && ../venv/bin/python main.py --cpu --base-directory ../demo`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.comfy_server import ComfyServer  # noqa: E402
from tests.support.paths import DEV, REPO  # noqa: E402
from tests.support.tiny_comfy import WORKFLOWS, make_tiny_base, tiny_api_graph  # noqa: E402
from thinkdiff.doctor import shipped_workflows  # noqa: E402

COMFYUI_VERSION = "0.3.75"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", default="thinkdiff_lvlm_in_context",
                        help=f"one of: {', '.join(p.stem for p in shipped_workflows())}")
    parser.add_argument("--out", type=Path, default=REPO / "demo_output")
    args = parser.parse_args()
    workflow = WORKFLOWS / f"{args.workflow}.json"
    if not workflow.is_file():
        parser.error(f"no workflow {workflow}")
    print("preparing ComfyUI base directory with tiny random models (NOT real weights) ...")
    base = make_tiny_base(DEV / "demo")
    with ComfyServer(base) as server:
        print(f"ComfyUI is up at {server.url}; running {workflow.name} with its model loaders pointed at the tiny models")
        graph = tiny_api_graph(workflow, server.object_info())
        started = time.time()
        try:
            result = server.run(graph)
        except ValueError as e:  # ComfyUI's validation, e.g. native CogVideoX on a ComfyUI older than 0.21
            print(f"ComfyUI {COMFYUI_VERSION} cannot run {workflow.name}: {e}", file=sys.stderr)
            return 1
        if not result.ok:
            print(f"workflow failed: {result.error}\nserver log: {server.log_path}", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (image,) = result.images()
    image_path = args.out / f"{args.workflow}.png"
    shutil.copy(image, image_path)
    print(f"done in {time.time() - started:.1f}s\n  image: {image_path}")
    for node_id, node in graph.items():
        if node["class_type"] == "ThinkDiffVLMEncode":
            text_path = args.out / f"{args.workflow}.txt"
            text_path.write_text(result.texts(node_id)[0] + "\n", encoding="utf-8")
            print(f"  VLM text: {text_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
