"""Test-only ComfyUI pack: loads tiny models through ComfyUI's own classes, and reports what nodes built.

The stock loaders cannot take some small weights (UNETLoader's detection fixes Flux's 24 heads and Chroma's, PixArt's and
Mochi's sizes, DualCLIPLoader/CLIPLoader always build a 4.7B-parameter T5-XXL, VAELoader builds CogVideoX's and Mochi's
VAEs at full size). These loaders read the small config stored in the safetensors metadata by
``tests/support/comfy_weights.py`` and otherwise follow ComfyUI's code paths:
  TinyUNETLoader            model_detection.model_config_from_unet_config -> model_base.Flux / Chroma / PixArt /
                            Mochi -> ModelPatcher
  TinyFluxDualCLIPLoader    comfy.sd.load_clip(clip_type=FLUX, model_options=<small configs>)
                            -> FluxClipModel + FluxTokenizer (real T5 and CLIP-L tokenizers)
  TinyCogVideoXCLIPLoader   the CLIP that CLIPLoader type cogvideox builds (cogvideo_te + CogVideoXTokenizer), T5 small
  TinyCogVideoXVAELoader    comfy.sd.VAE's CogVideoX branch with AutoencoderKLCogVideoX built small
  TinyMochiVAELoader        comfy.sd.VAE's Mochi branch with its encoder and decoder built small
  TinyT5CLIPLoader          CLIPLoader's own path for a tiny T5 of any T5 CLIP type
(The tiny CogVideoX transformer loads through the stock UNETLoader, the tiny SD3 and LTX-Video checkpoints through the
stock CheckpointLoaderSimple.) Shipped workflows run in tests with only
their model loaders swapped for these.
"""

import contextlib
import functools
import importlib.util
import json
import os
import sys
from unittest import mock

import comfy.model_detection
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models_base
import comfy.utils
import folder_paths
import torch
from aiohttp import web
from safetensors import safe_open
from safetensors.torch import save_file
from server import PromptServer


def _metadata(path):
    with safe_open(path, framework="pt") as f:
        return f.metadata() or {}


def loaded_models() -> list[str]:
    """Class names of the modules in ComfyUI's memory manager."""
    return [type(loaded.model.model).__name__ for loaded in mm.current_loaded_models]


class TinyUNETLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (folder_paths.get_filename_list("diffusion_models"),)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing/tiny_models"

    def load(self, unet_name):
        path = folder_paths.get_full_path_or_raise("diffusion_models", unet_name)
        config = json.loads(_metadata(path)["tiny_unet_config"])
        sd = comfy.utils.load_torch_file(path, safe_load=True)
        model_config = comfy.model_detection.model_config_from_unet_config(config, sd)
        device = mm.get_torch_device()
        dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                              supported_dtypes=list(model_config.supported_inference_dtypes),
                              weight_dtype=comfy.utils.weight_dtype(sd))
        model_config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, device, model_config.supported_inference_dtypes))
        model = model_config.get_model(sd, "").to(mm.unet_offload_device())
        model.load_model_weights(sd, "")
        return (comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device()),)


class TinyFluxDualCLIPLoader:
    @classmethod
    def INPUT_TYPES(cls):
        names = folder_paths.get_filename_list("text_encoders")
        return {"required": {"clip_name1": (names,), "clip_name2": (names,)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing/tiny_models"

    def load(self, clip_name1, clip_name2):
        paths = [folder_paths.get_full_path_or_raise("text_encoders", n) for n in (clip_name1, clip_name2)]
        options = {}
        for path in paths:
            meta = _metadata(path)
            if "tiny_clip_l_config" in meta:  # long_clipl rebuilds clip_l_model_config from model_config: set both
                options["model_config"] = json.loads(meta["tiny_clip_l_config"])
                options["clip_l_model_config"] = json.loads(meta["tiny_clip_l_config"])
            if "tiny_t5xxl_config" in meta:
                options["t5xxl_model_config"] = json.loads(meta["tiny_t5xxl_config"])
        clip = comfy.sd.load_clip(ckpt_paths=paths, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                                  clip_type=comfy.sd.CLIPType.FLUX, model_options=options)
        return (clip,)


class TinyCogVideoXCLIPLoader:
    """CLIPLoader type cogvideox for a tiny T5: the same CLIP class (sd.py: cogvideo_te + CogVideoXTokenizer)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": (folder_paths.get_filename_list("text_encoders"),)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing/tiny_models"

    def load(self, clip_name):
        import comfy.text_encoders.cogvideo as cogvideo

        path = folder_paths.get_full_path_or_raise("text_encoders", clip_name)
        sd = comfy.utils.load_torch_file(path, safe_load=True)
        target = comfy.supported_models_base.ClipTarget(cogvideo.CogVideoXTokenizer, cogvideo.cogvideo_te(**comfy.sd.t5xxl_detect([sd])))
        options = {"t5xxl_model_config": json.loads(_metadata(path)["tiny_t5xxl_config"])}
        return (comfy.sd.CLIP(target, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                              parameters=comfy.utils.calculate_parameters(sd), state_dict=[sd], model_options=options),)


HIDREAM_T5_MARKER = "encoder.block.23.layer.1.DenseReluDense.wi_1.weight"
T5_CLIP_TYPES = ("sd3", "chroma", "pixart", "ltxv", "mochi", "cogvideox", "wan", "hidream", "cosmos")


def _llama_tokenizer_stand_in(*args, tokenizer_data={}, min_length=256, pad_token=128258, **kwargs):  # noqa: B006 (as ComfyUI's)
    """Llama-3's tokenizer as HiDream's CLIP builds it, from the Qwen2.5 BPE files of the same ComfyUI tree (read as
    ComfyUI's Qwen-Image reads them): the vendored 0.33 tree lacks llama_tokenizer/tokenizer.json, and no Llama text is
    encoded here."""
    import comfy.sd1_clip
    from transformers import Qwen2Tokenizer

    qwen = os.path.join(os.path.dirname(comfy.sd.__file__), "text_encoders", "qwen25_tokenizer")
    return comfy.sd1_clip.SDTokenizer(qwen, pad_with_end=False, embedding_size=4096, embedding_key="llama",
                                      tokenizer_class=Qwen2Tokenizer, has_start_token=False,
                                      has_end_token=False, max_length=99999999, pad_token=pad_token, min_length=min_length,
                                      tokenizer_data=tokenizer_data)


def _without_llama_tokenizer() -> bool:
    return not os.path.isfile(os.path.join(os.path.dirname(comfy.sd.__file__), "text_encoders", "llama_tokenizer",
                                           "tokenizer.json"))


class TinyT5CLIPLoader:
    """CLIPLoader's own path (comfy.sd.load_text_encoder_state_dicts) for a tiny T5 of any T5 CLIP type: the detection
    that reads T5-XXL by its 24th block is told what the file stands for (Cosmos: the old T5); Wan's tokenizer, stored in
    its weights file, is stood in for by a SentencePiece model from the ComfyUI tree (and its vocabulary by T5's);
    HiDream's encoder, which routes a state dict to its T5 by T5-XXL's 24th block, gets that block's key as a marker
    (an unexpected key, left unused), and its Llama tokenizer, where the tree lacks it, is the tree's Qwen2.5 tokenizer."""

    @classmethod
    def INPUT_TYPES(cls):
        types = [t for t in T5_CLIP_TYPES if hasattr(comfy.sd.CLIPType, t.upper())]
        return {"required": {"clip_name": (folder_paths.get_filename_list("text_encoders"),), "type": (types,)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing/tiny_models"

    def load(self, clip_name, type):
        path = folder_paths.get_full_path_or_raise("text_encoders", clip_name)
        sd = comfy.utils.load_torch_file(path, safe_load=True)
        if type == "wan":
            spiece = os.path.join(os.path.dirname(comfy.sd.__file__), "text_encoders", "t5_pile_tokenizer", "tokenizer.model")
            with open(spiece, "rb") as f:
                sd["spiece_model"] = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        if type == "hidream":
            sd[HIDREAM_T5_MARKER] = torch.zeros(1)
        tiny = {**json.loads(_metadata(path)["tiny_t5xxl_config"]), "vocab_size": sd["shared.weight"].shape[0]}  # UMT5's is 256k
        detected = comfy.sd.TEModel.T5_XXL_OLD if type == "cosmos" else comfy.sd.TEModel.T5_XXL
        llama = (mock.patch("comfy.text_encoders.hunyuan_video.LLAMA3Tokenizer", _llama_tokenizer_stand_in)
                 if type == "hidream" and _without_llama_tokenizer() else contextlib.nullcontext())
        with mock.patch.object(comfy.sd, "detect_te_model", return_value=detected), llama:
            clip = comfy.sd.load_text_encoder_state_dicts(
                [sd], embedding_directory=folder_paths.get_folder_paths("embeddings"),
                clip_type=getattr(comfy.sd.CLIPType, type.upper()),
                model_options={"t5xxl_model_config": tiny, "umt5xxl_model_config": tiny})
        return (clip,)


def _pack_module(name):
    """The ThinkDiff pack's module ``name`` as ComfyUI imported it (under the pack's folder path)."""
    return next(module for key, module in sys.modules.items() if key.endswith(f".{name}") and "ThinkDiff" in key)


class TestT5Tokens:
    """A CLIP's own T5 encoding of ``text`` (unpadded: its tokens and end token) as ThinkDiff VLM features and as one
    image's ThinkDiff-CLIP image tokens: with TestIdentityAligner it stands in for aligned tokens."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "text": ("STRING", {"default": "a red ball"})}}

    RETURN_TYPES = ("THINKDIFF_FEATURES", "THINKDIFF_IMAGE_TOKENS")
    FUNCTION = "encode"
    CATEGORY = "testing/tiny_models"

    def encode(self, clip, text):
        cond = clip.encode_from_tokens(clip.tokenize(text, tokenizer_options={"t5xxl_min_length": 1}))
        vlm = _pack_module("thinkdiff.vlm")
        return (vlm.VLMOutput(cond[0], torch.zeros(cond.shape[1], dtype=torch.long), text), cond)


class _Identity(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # something for the memory manager to place
        self.in_dim = self.out_dim = width
        self.description = f"identity aligner ({width} wide, test)"

    def forward(self, features):
        return features


class TestIdentityAligner:
    """A ThinkDiff aligner that passes its input through (so T5 states come out as they went in)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 32})}}

    RETURN_TYPES = ("THINKDIFF_ALIGNER",)
    FUNCTION = "make"
    CATEGORY = "testing/tiny_models"

    def make(self, width):
        device = mm.get_torch_device()
        return (comfy.model_patcher.ModelPatcher(_Identity(width), load_device=device, offload_device=device),)


class TinyCogVideoXVAELoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (folder_paths.get_filename_list("vae"),)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "testing/tiny_models"

    def load(self, vae_name):
        import comfy.ldm.cogvideo.vae as cogvideo_vae

        path = folder_paths.get_full_path_or_raise("vae", vae_name)
        config = json.loads(_metadata(path)["tiny_cogvideox_vae_config"])
        small = functools.partial(cogvideo_vae.AutoencoderKLCogVideoX, **config)
        with mock.patch.object(cogvideo_vae, "AutoencoderKLCogVideoX", small):
            vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path, safe_load=True))
        vae.throw_exception_if_invalid()
        return (vae,)


class TinyMochiVAELoader:
    """comfy.sd.VAE's Mochi branch with the VAE's encoder and decoder built from the sizes in the file's metadata (ComfyUI's
    Mochi VideoVAE takes none)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (folder_paths.get_filename_list("vae"),)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "testing/tiny_models"

    def load(self, vae_name):
        import comfy.ldm.genmo.vae.model as mochi_vae

        path = folder_paths.get_full_path_or_raise("vae", vae_name)
        config = json.loads(_metadata(path)["tiny_mochi_vae_config"])

        class TinyVideoVAE(mochi_vae.VideoVAE):
            def __init__(self):
                torch.nn.Module.__init__(self)
                self.encoder = mochi_vae.Encoder(**config["encoder"])
                self.decoder = mochi_vae.Decoder(**config["decoder"])

        with mock.patch.object(mochi_vae, "VideoVAE", TinyVideoVAE):
            vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path, safe_load=True))
        vae.throw_exception_if_invalid()
        return (vae,)


class TestSigmas:
    """Reports a SIGMAS tensor as UI text (one JSON list), so tests can compare a workflow's noise schedule."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",)}}

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "testing/tiny_models"

    def report(self, sigmas):
        return {"ui": {"text": [json.dumps(sigmas.double().tolist())]}}


class TestT5Encode:
    """A CLIP's T5 encoding of given token ids (e.g. diffusers' fixed-length padding from the Hugging Face tokenizer), as
    CONDITIONING with the CLIP's pooled vector of the empty prompt: an independent reference for the ThinkDiff nodes."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "ids": ("STRING", {"default": "[1]"})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing/tiny_models"

    def encode(self, clip, ids):
        tokens = clip.tokenize("")
        tokens["t5xxl"] = [[(int(i), 1.0) for i in json.loads(ids)]]
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        return ([[cond, {"pooled_output": pooled}]],)


class TestSaveFeatures:
    """Saves a ThinkDiff VLM answer (features and token ids) to output/<prefix>.safetensors."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"features": ("THINKDIFF_FEATURES",), "filename_prefix": ("STRING", {"default": "features"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "testing/tiny_models"

    def save(self, features, filename_prefix):
        save_file({"features": features.features.float().contiguous(), "token_ids": features.token_ids.contiguous()},
                  os.path.join(folder_paths.get_output_directory(), f"{filename_prefix}.safetensors"))
        return {"ui": {"text": [features.text]}}


class TestFreeMemory:
    """Asks ComfyUI's memory manager for ``gigabytes`` on the main device (as a large model's load does); reports the loaded
    models before and after (two JSON lists)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"after": ("CONDITIONING",), "gigabytes": ("FLOAT", {"default": 1e6})}}

    @classmethod
    def IS_CHANGED(cls, after, gigabytes):
        return float("nan")

    RETURN_TYPES = ()
    FUNCTION = "free"
    OUTPUT_NODE = True
    CATEGORY = "testing/tiny_models"

    def free(self, after, gigabytes):
        before = loaded_models()
        mm.free_memory(gigabytes * 2**30, mm.get_torch_device())
        return {"ui": {"text": [json.dumps(before), json.dumps(loaded_models())]}}


class TestVLMInfo:
    """What ComfyUI knows of a ThinkDiff VLM: the ModelPatcher's size and the class names of its weight-holding layers."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vlm": ("THINKDIFF_VLM",)}}

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "testing/tiny_models"

    def report(self, vlm):
        classes = {}
        for module in vlm.model.modules():
            if any(True for _ in module.parameters(recurse=False)):
                name = f"{type(module).__module__}.{type(module).__qualname__}"
                classes[name] = classes.get(name, 0) + 1
        return {"ui": {"text": [json.dumps({"size": vlm.model_size(), "classes": classes})]}}


class TestThinkPartiallyLoaded:
    """Loads a ThinkDiff VLM through ComfyUI's partial-loading path (at most ``megabytes`` resident; the other cast layers
    are streamed per forward from the offload device), lets it answer greedily and saves the features; reports how many
    layers were left to stream. On a GPU ComfyUI takes this path by itself when the model does not fit."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vlm": ("THINKDIFF_VLM",), "prompt": ("STRING", {"default": "Describe a red ball."}),
                             "max_new_tokens": ("INT", {"default": 6}), "megabytes": ("FLOAT", {"default": 1.0}),
                             "filename_prefix": ("STRING", {"default": "streamed"})}}

    RETURN_TYPES = ()
    FUNCTION = "think"
    OUTPUT_NODE = True
    CATEGORY = "testing/tiny_models"

    def think(self, vlm, prompt, max_new_tokens, megabytes, filename_prefix):
        library = sys.modules[type(vlm.model).__module__]  # the pack's thinkdiff.vlm, as loaded by ComfyUI
        options = sys.modules[f"{library.__name__.rsplit('.', 1)[0]}.sampling_options"]
        mm.unload_all_models()
        vlm.load(vlm.load_device, lowvram_model_memory=int(megabytes * 2**20))
        streamed = sum(1 for module in vlm.model.modules() if getattr(module, "prev_comfy_cast_weights", None) is not None)
        try:
            (answer,) = vlm.model.encode([library.VLMRequest(prompt)], options.SamplingOptions(max_new_tokens=max_new_tokens,
                                                                                                 greedy=True))
        finally:
            vlm.detach()
        save_file({"features": answer.features.float().contiguous(), "token_ids": answer.token_ids.contiguous()},
                  os.path.join(folder_paths.get_output_directory(), f"{filename_prefix}.safetensors"))
        return {"ui": {"text": [json.dumps({"streamed_layers": streamed})]}}


class TestForceEOS:
    """Pushes the VLM's head to the end token at its ``at``-th generated token, for its next generation only (a random
    model practically never samples the end token by itself)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vlm": ("THINKDIFF_VLM",), "at": ("INT", {"default": 4, "min": 1})}}

    @classmethod
    def IS_CHANGED(cls, vlm, at):
        return float("nan")  # arm the hook for every prompt

    RETURN_TYPES = ("THINKDIFF_VLM",)
    FUNCTION = "force"
    CATEGORY = "testing/tiny_models"

    def force(self, vlm, at):
        encoder = vlm.model
        eos = encoder.eos_token_id if isinstance(encoder.eos_token_id, int) else encoder.eos_token_id[0]
        calls = []

        def bias(_module, _inputs, logits):
            calls.append(1)
            if len(calls) < at:
                return logits
            handle.remove()
            logits = logits.clone()
            logits[..., eos] += 1e4
            return logits

        handle = encoder.model.lm_head.register_forward_hook(bias)
        return (vlm,)


class TestConditioningInfo:
    """Reports a CONDITIONING's shapes and keys as UI text and saves its tensors, so tests can check what a node built.

    Accepts ComfyUI's list format and bare tensors (what CogVideoXWrapper-style nodes put on CONDITIONING sockets).
    """

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "filename_prefix": ("STRING", {"default": "conditioning"})}}

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "testing/tiny_models"

    def report(self, conditioning, filename_prefix):
        entries = [(conditioning, {"bare_tensor": True})] if torch.is_tensor(conditioning) else conditioning
        lines, tensors = [], {}
        for index, (cond, extras) in enumerate(entries):
            described = {k: list(v.shape) if hasattr(v, "shape") else v for k, v in sorted(extras.items())}
            lines.append(json.dumps({"cond": list(cond.shape), "dtype": str(cond.dtype), **described}))
            tensors[f"{index}.cond"] = cond.float().contiguous()
            for key in ("pooled_output", "attention_mask"):
                if torch.is_tensor(extras.get(key)):
                    tensors[f"{index}.{key}"] = extras[key].float().contiguous()
        save_file(tensors, os.path.join(folder_paths.get_output_directory(), f"{filename_prefix}.safetensors"))
        return {"ui": {"text": lines}}


class TestLoadedModels:
    """Lists the modules in ComfyUI's memory manager (``current_loaded_models``) after its input is ready."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"after": ("CONDITIONING",)}}

    @classmethod
    def IS_CHANGED(cls, after):
        return float("nan")  # always report the current state

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "testing/tiny_models"

    def report(self, after):
        return {"ui": {"text": loaded_models()}}


def interrupt_after_streamed_texts(count: int) -> None:
    """Presses Cancel right after the ``count``-th streamed text (send_progress_text; the VLM node streams one per token),
    in the generating thread: a deterministic stand-in for a user pressing Cancel between two tokens."""
    server = PromptServer.instance
    sent = 0

    def counting(*args, **kwargs):
        nonlocal sent
        sent += 1
        type(server).send_progress_text(server, *args, **kwargs)
        if sent == count:
            del server.send_progress_text  # back to the method
            mm.interrupt_current_processing(True)

    server.send_progress_text = counting


async def interrupt_after(request):
    """``{"texts": n}`` arms the Cancel after the n-th streamed text; ``{"texts": 0}`` disarms one that never fired."""
    count = int((await request.json())["texts"])
    if count:
        interrupt_after_streamed_texts(count)
    else:
        PromptServer.instance.__dict__.pop("send_progress_text", None)
    return web.json_response({"armed": bool(count)})


if getattr(PromptServer, "instance", None) is not None:  # unset when ComfyUI's executor runs in-process (tests/support/comfy_inprocess.py)
    PromptServer.instance.routes.post("/thinkdiff_test/interrupt_after")(interrupt_after)


NODE_CLASS_MAPPINGS = {"TinyUNETLoader": TinyUNETLoader, "TinyFluxDualCLIPLoader": TinyFluxDualCLIPLoader,
                       "TestConditioningInfo": TestConditioningInfo, "TestLoadedModels": TestLoadedModels,
                       "TestSigmas": TestSigmas, "TestT5Encode": TestT5Encode, "TestSaveFeatures": TestSaveFeatures,
                       "TestFreeMemory": TestFreeMemory, "TestVLMInfo": TestVLMInfo,
                       "TestThinkPartiallyLoaded": TestThinkPartiallyLoaded, "TestForceEOS": TestForceEOS,
                       "TinyT5CLIPLoader": TinyT5CLIPLoader, "TestT5Tokens": TestT5Tokens,
                       "TestIdentityAligner": TestIdentityAligner, "TinyMochiVAELoader": TinyMochiVAELoader}
if importlib.util.find_spec("comfy.ldm.cogvideo"):  # native CogVideoX: ComfyUI 0.21+
    NODE_CLASS_MAPPINGS.update(TinyCogVideoXCLIPLoader=TinyCogVideoXCLIPLoader, TinyCogVideoXVAELoader=TinyCogVideoXVAELoader)
NODE_DISPLAY_NAME_MAPPINGS = {name: f"{name} (test)" for name in NODE_CLASS_MAPPINGS}
