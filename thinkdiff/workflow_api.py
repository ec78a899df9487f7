"""Convert between ComfyUI's UI workflow format (0.4) and the API format, as the frontend does.

``ui_to_api`` follows the frontend's graphToPrompt for plain graphs: widget values are assigned to the
node's widget inputs in definition order, a seed's ``control_after_generate`` value and LoadImage's
upload button take one extra slot each, linked inputs become ``[source id, slot]``, and frontend-only
nodes (notes) are dropped. ``api_to_ui`` is the inverse used to author the shipped workflows.
"""

from __future__ import annotations

from typing import Any

VIRTUAL_NODES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _input_specs(info: dict[str, Any]) -> list[tuple[str, list]]:
    spec = info["input"]
    order = info.get("input_order") or {k: list(spec.get(k, {})) for k in ("required", "optional")}
    return [(name, spec[section][name]) for section in ("required", "optional") for name in order.get(section, [])]


def _is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _options(spec: list) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _extra_slots(spec: list) -> int:
    options = _options(spec)
    return int(bool(options.get("control_after_generate"))) + int(bool(options.get("image_upload")))


def _default(spec: list) -> Any:
    """A widget's default: its ``default`` option, else a combo's first choice."""
    options = _options(spec)
    if "default" in options:
        return options["default"]
    choices = spec[0] if isinstance(spec[0], list) else options.get("options", [])
    return choices[0] if choices else None


def _widget_slots(spec: list, value: Any) -> list[Any]:
    """A widget's ``widgets_values`` entries: its value, then "fixed" for a seed's control and "image" for an upload button."""
    options = _options(spec)
    return [value] + ["fixed"] * bool(options.get("control_after_generate")) + ["image"] * bool(options.get("image_upload"))


def ui_to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    links = {link[0]: link for link in ui["links"]}
    api: dict[str, Any] = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) == 2:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed; not supported here")
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        for name, spec in _input_specs(info):
            if _is_widget(spec):  # a widget newer than the saved workflow gets its default, as in the frontend
                inputs[name] = values.pop(0) if values else _default(spec)
                del values[: _extra_slots(spec)]
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or info.get("display_name", node["type"])}}
    return api


def api_to_ui(api: dict[str, Any], object_info: dict[str, Any], layout: dict[str, tuple[float, float]],
              extras: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build a 0.4 UI workflow; ``layout`` gives node positions, ``extras`` extra node fields (size, properties); a node's
    ``_meta.title`` becomes its title."""
    nodes, links, outputs = [], [], {}
    for order, (node_id, node) in enumerate(api.items()):
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, spec in _input_specs(info):
            value = node["inputs"].get(name)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                link_id = len(links) + 1
                source_type = object_info[api[value[0]]["class_type"]]["output"][value[1]]
                links.append([link_id, int(value[0]), value[1], int(node_id), len(inputs), source_type])
                outputs.setdefault((value[0], value[1]), []).append(link_id)
                inputs.append({"name": name, "type": source_type, "link": link_id})
                if _is_widget(spec):  # a linked widget keeps a value (its default) that the link overrides
                    inputs[-1]["widget"] = {"name": name}
                    widgets += _widget_slots(spec, _options(spec).get("default"))
            elif _is_widget(spec) and value is not None:
                widgets += _widget_slots(spec, value)
            elif not _is_widget(spec):
                inputs.append({"name": name, "type": spec[0], "link": None})
        x, y = layout.get(node_id, (order * 320, 100))
        title = {"title": node["_meta"]["title"]} if "title" in node.get("_meta", {}) else {}
        nodes.append({"id": int(node_id), "type": node["class_type"], "pos": [x, y], "size": [300, 120], "flags": {},
                      "order": order, "mode": 0, "inputs": inputs, "outputs": [],
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets, **title,
                      **(extras or {}).get(node_id, {})})
    for node in nodes:
        info = object_info[node["type"]]
        node["outputs"] = [{"name": name, "type": kind, "links": outputs.get((str(node["id"]), slot), [])}
                           for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"], strict=True))]
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}
