"""Run a shipped workflow in a real, headless ComfyUI with tiny random models; write its image and text.

    python scripts/run_demo.py [WORKFLOW] [--out demo_output]

The ComfyUI tree is the one tests/support/paths.py selects (THINKDIFF_COMFYUI, default 0.33.0). The base directory is
.dev/demo (kept, so it can be opened later with
`cd .dev/comfyui-0.33.0 && ../venv/bin/python main.py --cpu --base-directory ../demo`). Video workflows run at a CPU
size (64x64, 9 frames, 2 steps); image workflows as shipped.
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
from tests.support.tiny_comfy import WORKFLOWS, at_cpu_size, is_video, make_tiny_base, tiny_api_graph  # noqa: E402
from thinkdiff.doctor import shipped_workflows  # noqa: E402


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
        version = server.get("/system_stats")["system"]["comfyui_version"]
        print(f"ComfyUI {version} is up at {server.url}; running {workflow.name} with its model loaders pointed at the tiny models")
        try:
            graph = tiny_api_graph(workflow, server.object_info())
            graph = at_cpu_size(graph) if is_video(graph) else graph
            started = time.time()
            result = server.run(graph)
        except (KeyError, ValueError) as e:  # a node or value this ComfyUI lacks, e.g. native CogVideoX before 0.21
            print(f"ComfyUI {version} cannot run {workflow.name}: {e}", file=sys.stderr)
            return 1
        if not result.ok:
            print(f"workflow failed: {result.error}\nserver log: {server.log_path}", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (image,) = result.images()
    image_path = args.out / f"{args.workflow}{image.suffix}"
    shutil.copy(image, image_path)
    print(f"done in {time.time() - started:.1f}s on ComfyUI {version}\n  output: {image_path}")
    for node_id, node in graph.items():
        if node["class_type"] == "ThinkDiffVLMEncode":
            text_path = args.out / f"{args.workflow}.txt"
            text_path.write_text(result.texts(node_id)[0] + "\n", encoding="utf-8")
            print(f"  VLM text: {text_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
