"""UI (0.4) workflow -> API graph, as the frontend converts it: widget slots, links, defaults for newer widgets."""

from thinkdiff.workflow_api import ui_to_api

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
