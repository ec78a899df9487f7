"""UI (0.4) workflow -> API graph, as the frontend converts it: widget slots, links, defaults for newer widgets."""

import pytest

from thinkdiff.workflow_api import api_to_ui, ui_to_api

INFO = {"Sampler": {"display_name": "Sampler", "input_order": {"required": ["model", "seed", "steps", "sampler"],
                                                                "optional": ["weights"]},
                    "input": {"required": {"model": ["MODEL"], "seed": ["INT", {"default": 0, "control_after_generate": True}],
                                           "steps": ["INT", {"default": 20}], "sampler": [["euler", "ddim"], {}]},
                              "optional": {"weights": ["COMBO", {"options": ["default", "fp8_e4m3fn"]}]}}},
        "Loader": {"display_name": "Loader", "input_order": {"required": ["name"]}, "input": {"required": {"name": [["a", "b"]]}}}}


def workflow(values):
    return {"nodes": [{"id": 1, "type": "Loader", "widgets_values": ["b"]},
                      {"id": 2, "type": "Sampler", "widgets_values": values, "inputs": [{"name": "model", "link": 5}]},
                      {"id": 3, "type": "MarkdownNote", "widgets_values": ["notes are dropped"]}],
            "links": [[5, 1, 0, 2, 0, "MODEL"]]}


def test_widget_values_fill_the_inputs_in_order_skipping_the_seed_control():
    api = ui_to_api(workflow([42, "fixed", 28, "ddim", "fp8_e4m3fn"]), INFO)
    assert api["2"]["inputs"] == {"model": ["1", 0], "seed": 42, "steps": 28, "sampler": "ddim", "weights": "fp8_e4m3fn"}
    assert set(api) == {"1", "2"} and api["1"]["inputs"] == {"name": "b"}


def test_widgets_newer_than_the_saved_workflow_get_their_defaults():
    api = ui_to_api(workflow([42, "fixed"]), INFO)
    assert api["2"]["inputs"] == {"model": ["1", 0], "seed": 42, "steps": 20, "sampler": "euler", "weights": "default"}


UPLOAD = {"LoadImage": {"display_name": "Load Image", "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"],
                        "input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}],  # no input_order
                                               "channel": [["alpha", "red"], {}], "invert": ["BOOLEAN", {"default": False}]}}},
          "Think": {"display_name": "ThinkDiff Think", "output": ["FEATURES"], "output_name": ["features"],
                    "input_order": {"required": ["image", "prompt", "seed"], "optional": ["tokens"]},
                    "input": {"required": {"seed": ["INT", {"default": 7, "control_after_generate": True}],  # not in order
                                           "image": ["IMAGE"], "prompt": ["STRING", {"default": "hi", "multiline": True}]},
                              "optional": {"tokens": ["INT", {"default": 128}]}}},
          "Loader": {"output": ["MODEL"], "output_name": ["model"],  # no display_name
                     "input": {"required": {"name": [[]]}, "optional": {"strength": ["FLOAT", {"default": 1.0}]}}},
          "Count": {"display_name": "Count", "output": ["INT"], "output_name": ["count"],
                    "input": {"required": {"value": ["INT", {"default": 2}]}}}}
API = {"4": {"class_type": "LoadImage", "inputs": {"image": "b.png", "channel": "red", "invert": True},
             "_meta": {"title": "Load Image"}},
       "9": {"class_type": "Think", "inputs": {"image": ["4", 0], "prompt": "why?", "seed": ["12", 0], "tokens": 64},
             "_meta": {"title": "My think"}},
       "12": {"class_type": "Think", "inputs": {"image": ["4", 0], "prompt": "first", "seed": 3, "tokens": 128},
              "_meta": {"title": "ThinkDiff Think"}}}


def test_an_upload_button_takes_a_slot_a_link_overrides_a_widget_and_titles_fall_back():
    ui = {"nodes": [{"id": 13, "type": "Loader", "widgets_values": None, "mode": 2},  # muted: left out
                    {"id": 4, "type": "LoadImage", "widgets_values": ["b.png", "image", "red", True]},
                    {"id": 9, "type": "Think", "title": "My think", "widgets_values": ["why?", 5, "fixed", 64],
                     "inputs": [{"name": "image", "link": 1}, {"name": "seed", "link": 2, "widget": {"name": "seed"}},
                                {"name": "tokens", "link": None}]},
                    {"id": 12, "type": "Think", "widgets_values": ["first", 3, "randomize"], "inputs": [{"name": "image", "link": 3}]}],
          "links": [[1, 4, 0, 9, 0, "IMAGE"], [2, 12, 0, 9, 1, "INT"], [3, 4, 0, 12, 0, "IMAGE"]]}
    assert ui_to_api(ui, UPLOAD) == API


def test_a_bypassed_node_is_refused_by_id_and_type():
    ui = {"nodes": [{"id": 13, "type": "Loader", "widgets_values": [], "mode": 4}], "links": []}
    with pytest.raises(ValueError, match=r"^node 13 \(Loader\) is bypassed; not supported here$"):
        ui_to_api(ui, UPLOAD)
    assert ui_to_api({"nodes": [{"id": 13, "type": "Loader", "widgets_values": []}], "links": []}, UPLOAD) == {
        "13": {"class_type": "Loader", "inputs": {"name": None, "strength": 1.0},  # an empty combo: no default
               "_meta": {"title": "Loader"}}}  # without a display name: the type


def test_api_to_ui_builds_the_frontends_graph_and_converts_back():
    ui = api_to_ui(API, UPLOAD, layout={"4": (10.0, 20.0)}, extras={"9": {"size": [400, 300], "color": "#223"}})
    assert ui_to_api(ui, UPLOAD) == API
    assert (ui["last_node_id"], ui["last_link_id"], ui["version"], ui["groups"]) == (12, 3, 0.4, [])
    assert ui["links"] == [[1, 4, 0, 9, 0, "IMAGE"], [2, 12, 0, 9, 1, "FEATURES"], [3, 4, 0, 12, 0, "IMAGE"]]
    load, think, first = ui["nodes"]
    assert (load["pos"], think["pos"], first["pos"]) == ([10.0, 20.0], [320, 100], [640, 100])  # laid out, else in a row
    assert load == {"id": 4, "type": "LoadImage", "pos": [10.0, 20.0], "size": [300, 120], "flags": {}, "order": 0, "mode": 0,
                    "inputs": [], "properties": {"Node name for S&R": "LoadImage"}, "widgets_values": ["b.png", "image", "red", True],
                    "title": "Load Image",
                    "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1, 3]}, {"name": "MASK", "type": "MASK", "links": []}]}
    assert set(ui) == {"last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"}
    assert ui["config"] == ui["extra"] == {}
    assert think["title"] == "My think" and think["size"] == [400, 300] and think["color"] == "#223"
    assert think["widgets_values"] == ["why?", 7, "fixed", 64]  # the linked seed keeps its default and control slot
    assert think["inputs"] == [{"name": "image", "type": "IMAGE", "link": 1},
                               {"name": "seed", "type": "FEATURES", "link": 2, "widget": {"name": "seed"}}]
    assert first["widgets_values"] == ["first", 3, "fixed", 128] and first["outputs"][0]["links"] == [2]
    assert (think["order"], think["mode"], think["type"], think["properties"]) == (1, 0, "Think", {"Node name for S&R": "Think"})


def test_a_linked_widget_is_marked_as_that_widget_wherever_it_sits():
    ui = api_to_ui({"1": {"class_type": "Count", "inputs": {"value": 5}}, "2": {"class_type": "Count", "inputs": {"value": ["1", 0]}}},
                   UPLOAD, layout={})
    assert ui["nodes"][1]["inputs"] == [{"name": "value", "type": "INT", "link": 1, "widget": {"name": "value"}}]
    assert ui["nodes"][1]["widgets_values"] == [2]  # its default, which the link overrides


def test_an_unlinked_socket_input_is_listed_without_a_link():
    info = {"Think": {**UPLOAD["Think"], "input": {**UPLOAD["Think"]["input"]}}}
    ui = api_to_ui({"1": {"class_type": "Think", "inputs": {"prompt": "x", "seed": 1}}}, info, layout={})
    (node,) = ui["nodes"]
    assert node["inputs"] == [{"name": "image", "type": "IMAGE", "link": None}] and "title" not in node
    assert node["widgets_values"] == ["x", 1, "fixed"] and ui["links"] == []  # no value for tokens: no slot
