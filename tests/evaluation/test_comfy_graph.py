"""The comfyui backend's graph edits on small hand-written API graphs: every node id, link and input worked out by hand."""

from __future__ import annotations

import copy

import pytest

from evaluation.cobsat.comfy_graph import configure, is_link, node_of_type, set_images, set_input
from evaluation.cobsat.config import ComfyUIConfig, GenerateConfig
from thinkdiff.errors import ThinkDiffError


def template() -> dict:
    """The shipped workflow's shape: two demo images joined by an ImageBatch, width and height from primitive nodes, a
    group node's id ("20:1") that is not a number."""
    return {
        "1": {"class_type": "ThinkDiffVLMLoader", "inputs": {"model": "Qwen2-VL-7B-Instruct", "dtype": "bf16"}},
        "2": {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": "lvlm.safetensors"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "a.png", "upload": "image"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "b.png", "upload": "image"}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["4", 0]}},
        "6": {"class_type": "ThinkDiffVLMEncode", "inputs": {"vlm": ["1", 0], "images": ["5", 0], "prompt": "", "seed": 0,
                                                            "max_new_tokens": 512, "greedy": True}},
        "7": {"class_type": "ThinkDiffFluxConditioning", "inputs": {"aligner": ["2", 0], "guidance": 3.5}},
        "8": {"class_type": "KSampler", "inputs": {"steps": 28, "seed": 0, "positive": ["7", 0]}},
        "9": {"class_type": "PrimitiveInt", "inputs": {"value": 1024}},
        "10": {"class_type": "PrimitiveInt", "inputs": {"value": 1024}},
        "11": {"class_type": "EmptySD3LatentImage", "inputs": {"width": ["9", 0], "height": ["10", 0], "batch_size": 1}},
        "12": {"class_type": "ModelSamplingFlux", "inputs": {"width": ["9", 0], "height": 1024, "max_shift": 1.15}},
        "13": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "14": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl.safetensors"}},
        "15": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "20:1": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ThinkDiff"}},
    }


def test_node_of_type_finds_the_one_node():
    graph = template()
    assert node_of_type(graph, "KSampler") == "8"
    assert node_of_type(graph, "SaveImage") == "20:1"
    with pytest.raises(ThinkDiffError) as error:
        node_of_type(graph, "LoadImage")
    assert str(error.value) == "the workflow must have exactly one LoadImage node, it has 2"
    with pytest.raises(ThinkDiffError) as error:
        node_of_type(graph, "CLIPTextEncode")
    assert str(error.value) == "the workflow must have exactly one CLIPTextEncode node, it has 0"


def test_is_link():
    assert is_link(["3", 0]) and is_link(["20:1", 2])
    for value in (("3", 0), ["3", 0, 1], ["3"], [3, 0], [0, "3"], "ab", 1024, None, {"3": 0}):
        assert not is_link(value), value


def test_set_input_through_a_primitive_node():
    graph = template()
    set_input(graph, "11", "width", 320)  # linked to PrimitiveInt 9: the primitive's value changes, the link stays
    assert graph["9"]["inputs"] == {"value": 320} and graph["11"]["inputs"]["width"] == ["9", 0]
    set_input(graph, "12", "height", 192)  # a plain value
    assert graph["12"]["inputs"] == {"width": ["9", 0], "height": 192, "max_shift": 1.15}
    set_input(graph, "12", "base_shift", 0.5)  # not there yet
    assert graph["12"]["inputs"]["base_shift"] == 0.5
    set_input(graph, "8", "positive", 7)  # linked to a node without a value: the input itself is replaced
    assert graph["8"]["inputs"]["positive"] == 7 and graph["7"]["inputs"] == {"aligner": ["2", 0], "guidance": 3.5}
    assert graph["10"]["inputs"] == {"value": 1024}


def untouched(graph: dict) -> bool:
    """The template's other nodes are as they were (the encoder but for its images input); the image nodes are gone."""
    kept = {k: copy.deepcopy(v) for k, v in graph.items() if k in template()}
    del kept["6"]["inputs"]["images"]
    expected = {k: v for k, v in template().items() if k not in ("3", "4", "5")}
    del expected["6"]["inputs"]["images"]
    return kept == expected


def test_one_image_is_one_load_image():
    graph = template()
    set_images(graph, "6", ["cobsat/color_car/blue_car.png"])
    assert untouched(graph)
    # The old image nodes (3, 4, 5) are gone; new ids follow the largest numeric id, 15.
    assert set(graph) - set(template()) == {"16"} and not {"3", "4", "5"} & set(graph)
    assert graph["16"] == {"class_type": "LoadImage", "inputs": {"image": "cobsat/color_car/blue_car.png"}}
    assert graph["6"]["inputs"]["images"] == ["16", 0]


@pytest.mark.parametrize("count", [2, 4])
def test_n_images_are_load_images_joined_by_image_batches(count: int):
    names = [f"cobsat/x/{k}.png" for k in range(count)]
    graph = template()
    set_images(graph, "6", names)
    assert untouched(graph)
    new = {k: v for k, v in graph.items() if k not in template()}
    expected = {"16": {"class_type": "LoadImage", "inputs": {"image": names[0]}},
                "18": {"class_type": "LoadImage", "inputs": {"image": names[1]}},
                "19": {"class_type": "ImageBatch", "inputs": {"image1": ["16", 0], "image2": ["18", 0]}}}
    if count == 4:
        expected |= {"20": {"class_type": "LoadImage", "inputs": {"image": names[2]}},
                     "21": {"class_type": "ImageBatch", "inputs": {"image1": ["19", 0], "image2": ["20", 0]}},
                     "22": {"class_type": "LoadImage", "inputs": {"image": names[3]}},
                     "23": {"class_type": "ImageBatch", "inputs": {"image1": ["21", 0], "image2": ["22", 0]}}}
    assert new == expected
    assert graph["6"]["inputs"]["images"] == ["19", 0] if count == 2 else ["23", 0]


def test_the_old_image_chain_is_removed_whatever_its_shape():
    """A longer chain (a batch of a batch, one image twice), at the largest ids: all of it goes, the new ids count from
    what is left. Other nodes the chain reads from stay."""
    graph = {"1": {"class_type": "ThinkDiffVLMEncode", "inputs": {"images": ["7", 0], "seed": 3}},
             "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0]}},
             "4": {"class_type": "LoadImage", "inputs": {"image": "a.png", "upload": "image"}},
             "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["4", 0]}},
             "6": {"class_type": "LoadImage", "inputs": {"image": "b.png", "upload": "image"}},
             "7": {"class_type": "ImageBatch", "inputs": {"image1": ["5", 0], "image2": ["8", 0]}},
             "8": {"class_type": "ImageBatch", "inputs": {"image1": ["6", 0], "image2": ["2", 0]}},
             "x": {"class_type": "Note", "inputs": {}}}
    set_images(graph, "1", ["c.png", "d.png"])
    assert graph == {"1": {"class_type": "ThinkDiffVLMEncode", "inputs": {"images": ["6", 0], "seed": 3}},
                     "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0]}},
                     "3": {"class_type": "LoadImage", "inputs": {"image": "c.png"}},
                     "5": {"class_type": "LoadImage", "inputs": {"image": "d.png"}},
                     "6": {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["5", 0]}},
                     "x": {"class_type": "Note", "inputs": {}}}


def test_a_cycle_of_image_nodes_is_removed_once():
    """Each old node is read once: a batch reading itself or its reader (a cycle ComfyUI would refuse) ends too."""
    graph = {"1": {"class_type": "ThinkDiffVLMEncode", "inputs": {"images": ["2", 0]}},
             "2": {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["2", 0]}},
             "3": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}}}
    set_images(graph, "1", ["c.png"])
    assert graph == {"1": {"class_type": "ThinkDiffVLMEncode", "inputs": {"images": ["2", 0]}},
                     "2": {"class_type": "LoadImage", "inputs": {"image": "c.png"}}}


def test_a_node_without_images_gets_them():
    graph = {"1": {"class_type": "ThinkDiffVLMEncode", "inputs": {"seed": 3}}}
    set_images(graph, "1", ["c.png"])
    assert graph == {"1": {"class_type": "ThinkDiffVLMEncode", "inputs": {"seed": 3, "images": ["2", 0]}},
                     "2": {"class_type": "LoadImage", "inputs": {"image": "c.png"}}}


@pytest.mark.parametrize("used", ["5", "3"])
def test_images_used_elsewhere_are_refused(used: str):
    graph = template()
    graph["30"] = {"class_type": "PreviewImage", "inputs": {"images": [used, 0]}}
    with pytest.raises(ThinkDiffError) as error:
        set_images(graph, "6", ["c.png"])
    assert str(error.value) == "the workflow uses its input images elsewhere too; the comfyui backend cannot rebuild them"


SETTINGS = GenerateConfig(max_new_tokens=77, temperature=0.25, top_p=0.5, min_pixels=3136, max_pixels=12544, width=320,
                          height=192, steps=9, guidance=2.5, batch_size=3, instruction="draw")


def test_configure_puts_every_setting_in_its_input():
    graph = template()
    configure(graph, SETTINGS, ComfyUIConfig())
    expected = template()
    expected["6"]["inputs"] = {"vlm": ["1", 0], "images": ["5", 0], "prompt": "", "seed": 0, "max_new_tokens": 77,
                               "temperature": 0.25, "top_p": 0.5, "greedy": False, "stop_at_eos": False,
                               "picture_labels": "on", "min_pixels": 3136, "max_pixels": 12544}
    expected["7"]["inputs"]["guidance"] = 2.5
    expected["8"]["inputs"]["steps"] = 9
    # EmptySD3LatentImage's width and height are the primitives 9 and 10; ModelSamplingFlux shares 9, its height is its own.
    expected["9"]["inputs"]["value"] = 320
    expected["10"]["inputs"]["value"] = 192
    expected["12"]["inputs"]["height"] = 192
    assert graph == expected  # empty model names keep the workflow's


def test_configure_puts_each_model_name_in_its_loader():
    graph = template()
    models = ComfyUIConfig(vlm="my-vlm", aligner="my-aligner.safetensors", unet="my-unet.gguf", clip_l="my-clip.safetensors",
                           t5="my-t5.safetensors", vae="my-vae.safetensors")
    configure(graph, SETTINGS, models)
    loaders = {k: graph[k]["inputs"] for k in ("1", "2", "13", "14", "15")}
    assert loaders == {"1": {"model": "my-vlm", "dtype": "bf16"}, "2": {"aligner_name": "my-aligner.safetensors"},
                       "13": {"unet_name": "my-unet.gguf", "weight_dtype": "default"},
                       "14": {"clip_name1": "my-clip.safetensors", "clip_name2": "my-t5.safetensors"},
                       "15": {"vae_name": "my-vae.safetensors"}}
    graph = template()
    configure(graph, SETTINGS, ComfyUIConfig(t5="other-t5.safetensors"))
    assert graph["14"]["inputs"] == {"clip_name1": "clip_l.safetensors", "clip_name2": "other-t5.safetensors"}
    assert [graph[k] for k in ("1", "2", "13", "15")] == [template()[k] for k in ("1", "2", "13", "15")]


def test_configure_needs_each_node_once():
    for node_type in ("ThinkDiffVLMEncode", "ThinkDiffFluxConditioning", "KSampler", "EmptySD3LatentImage", "ModelSamplingFlux"):
        graph = {k: v for k, v in template().items() if v["class_type"] != node_type}
        with pytest.raises(ThinkDiffError, match=f"exactly one {node_type} node, it has 0"):
            configure(graph, SETTINGS, ComfyUIConfig())
    graph = {k: v for k, v in template().items() if v["class_type"] != "VAELoader"}
    configure(copy.deepcopy(graph), SETTINGS, ComfyUIConfig())  # a loader is looked up only for a name to set
    with pytest.raises(ThinkDiffError, match="exactly one VAELoader node, it has 0"):
        configure(graph, SETTINGS, ComfyUIConfig(vae="my-vae.safetensors"))
