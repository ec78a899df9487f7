"""The committed node help pages (web/docs) are what scripts/make_help_pages.py writes from the nodes' own schemas, so a
changed node id, display name, description, category, input, default, range, step, multiline text, control after generate,
combo option, hidden input, tooltip or output shows here (V3 schemas, through the ``GET_NODE_INFO_V1`` that ComfyUI's
/object_info serves; each call builds a fresh schema). What the model-file combos list is tested in test_comfy_models.py."""

from __future__ import annotations

import functools
import importlib.util

import pytest

from tests.support.comfy_pack import pack
from tests.support.paths import REPO

pytestmark = pytest.mark.comfyui
DOCS = REPO / "web" / "docs"


@functools.cache
def help_page_writer():
    spec = importlib.util.spec_from_file_location("make_help_pages", REPO / "scripts" / "make_help_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.page


def node_classes() -> list[type]:
    modules = pack()
    node = modules.vlm_nodes.io.ComfyNode  # comfy_api is importable once the pack is mounted
    found = {value for module in (modules.vlm_nodes, modules.clip_nodes, modules.conditioning_nodes, modules.t5_nodes)
             for value in vars(module).values()
             if isinstance(value, type) and issubclass(value, node) and value.__module__ == module.__name__}
    return sorted(found, key=lambda cls: cls.__name__)


def test_every_node_has_its_page_and_every_page_a_node():
    assert {cls.GET_NODE_INFO_V1()["name"] for cls in node_classes()} == {path.stem for path in DOCS.glob("*.md")}


@pytest.mark.parametrize("node", node_classes(), ids=lambda cls: cls.__name__)
def test_the_help_page_is_the_nodes_schema(node):
    info = node.GET_NODE_INFO_V1()
    assert info["name"] == node.__name__  # stable node ids: the class name
    assert help_page_writer()(info["name"], info) == (DOCS / f"{info['name']}.md").read_text()
