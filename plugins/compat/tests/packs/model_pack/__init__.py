"""A pack that drives models through ComfyUI's internal modules, as the popular packs do.

Its imports are the ones Impact-Pack, KJNodes, rgthree, essentials,
UltimateSDUpscale, comfy_mtb, VideoHelperSuite and AnimateDiff make at import
time; its nodes call the same functions they call while running.
"""

import comfy
import comfy.diffusers_convert  # noqa: F401 - imported at start-up by was-node-suite
import comfy.float
import comfy.k_diffusion.sampling
import comfy.latent_formats
import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
import comfy.lora
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.ops
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import comfy.sd
import comfy.utils
import folder_paths
import latent_preview
import server
from comfy.cli_args import args as cli_args
from comfy.k_diffusion.utils import FolderOfImages
from comfy.ldm.modules.attention import optimized_attention, wrap_attn
from comfy.model_base import SD21UNCLIP, SDXL, BaseModel
from comfy.model_patcher import ModelPatcher
from comfy.patcher_extension import CallbacksMP, PatcherInjection, WrappersMP
from comfy.samplers import CFGGuider, sampling_function
from comfy_api import feature_flags
from comfy_extras.nodes_clip_sdxl import CLIPTextEncodeSDXL  # noqa: F401
from comfy_extras.nodes_mask import GrowMask, composite
from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel  # noqa: F401
from nodes import MAX_RESOLUTION, CLIPTextEncode, VAEDecode, common_ksampler
from server import PromptServer

web = server.web  # VideoHelperSuite
if PromptServer.instance.app.frozen or PromptServer.instance.app.router.frozen:  # comfy_mtb, KJNodes check
    raise RuntimeError("the app is frozen at import time")

SEEN = {"attn1": 0, "apply_model": 0, "post_cfg": 0, "sampling_function": 0, "on_load": 0, "injected_calls": 0,
        "ejected": 0}
assert openaimodel.UNetModel is not None and issubclass(SD21UNCLIP, BaseModel)
assert ".png" in FolderOfImages.IMG_EXTENSIONS


@PromptServer.instance.routes.get("/model_pack/seen")
async def seen(request):
    app = PromptServer.instance.app
    return web.json_response({**SEEN, "frozen": [app.frozen, app.router.frozen]})


class MPLoadCheckpoint:
    """Impact/Easy-Use style: resolve a file with folder_paths, load it with comfy.sd."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "model_pack"

    def load(self, ckpt_name):
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        model, clip, vae, clipvision = comfy.sd.load_checkpoint_guess_config(
            path, output_vae=True, output_clip=True, embedding_directory=folder_paths.get_folder_paths("embeddings"))
        assert clipvision is None and isinstance(model, ModelPatcher)
        assert isinstance(clip, comfy.sd.CLIP) and isinstance(vae, comfy.sd.VAE)
        assert not isinstance(model.model, SDXL)
        return model, clip, vae


class MPPatchModel:
    """KJNodes/AnimateDiff style: clone, attention patch, wrapper, callback and post-cfg function."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "model_pack"

    def patch(self, model):
        m = model.clone()

        def attn1(q, k, v, extra_options):
            SEEN["attn1"] += 1
            return q, k, v

        def apply_model(executor, *call_args, **kwargs):
            SEEN["apply_model"] += 1
            return executor(*call_args, **kwargs)

        def post_cfg(cfg_args):
            SEEN["post_cfg"] += 1
            return cfg_args["denoised"]

        def on_load(patcher, device_to, lowvram_model_memory, force_patch_weights, full_load):
            SEEN["on_load"] += 1

        hooks = []

        def inject(patcher):  # AnimateDiff inserts its motion modules into the network this way
            def count(module, args, output):
                SEEN["injected_calls"] += 1

            hooks.append(patcher.model.diffusion_model.out.register_forward_hook(count))

        def eject(patcher):
            SEEN["ejected"] += 1
            while hooks:
                hooks.pop().remove()

        m.set_injections("model_pack", [PatcherInjection(inject=inject, eject=eject)])
        m.set_model_attn1_patch(attn1)
        m.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "model_pack", apply_model)
        m.add_callback(CallbacksMP.ON_LOAD, on_load)
        m.set_model_sampler_post_cfg_function(post_cfg)
        return (m,)


class MPSample:
    """Impact-Pack style: noise and sampling through comfy.sample, as KSampler does."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**32}),
                             "steps": ("INT", {"default": 2, "min": 1, "max": 100}),
                             "cfg": ("FLOAT", {"default": 7.0}),
                             "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
                             "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "latent_image": ("LATENT",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "model_pack"

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image):
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        callback = latent_preview.prepare_callback(model, steps)
        samples = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                      denoise=1.0, callback=callback, seed=seed)
        return ({"samples": samples},)


class CountingGuider(CFGGuider):
    """KJNodes style: a guider whose predict_noise calls comfy.samplers.sampling_function itself."""

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        SEEN["sampling_function"] += 1
        return sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                 self.conds.get("positive"), self.cfg, model_options=model_options or {}, seed=seed)


class MPGuiderSample:
    """SamplerCustom style: sigmas from comfy.samplers, a KSAMPLER object and a CFGGuider subclass."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "latent_image": ("LATENT",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**32})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "model_pack"

    def sample(self, model, positive, negative, latent_image, seed):
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", 2)
        sampler = comfy.samplers.sampler_object("euler")
        assert isinstance(sampler, comfy.samplers.KSAMPLER)
        guider = CountingGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(7.0)
        latent = latent_image["samples"]
        noise = comfy.sample.prepare_noise(latent, seed)
        samples = guider.sample(noise, latent, sampler, sigmas, seed=seed)
        return ({"samples": samples.cpu()},)


class MPImageTools:
    """essentials/KJNodes style image helpers: common_upscale, composite, GrowMask, tiled_scale, devices."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "run"
    CATEGORY = "model_pack"

    def run(self, image):
        import torch

        device = comfy.model_management.get_torch_device()
        comfy.model_management.soft_empty_cache()
        samples = image.movedim(-1, 1)
        big = comfy.utils.common_upscale(samples, samples.shape[3] * 2, samples.shape[2] * 2, "bilinear", "disabled")
        tiled = comfy.utils.tiled_scale(samples, lambda t: t, tile_x=16, tile_y=16, overlap=4, upscale_amount=1,
                                        out_channels=3, output_device=device)
        assert torch.allclose(tiled, samples, atol=1e-5)
        canvas = torch.zeros_like(big)
        pasted = composite(canvas, samples, 0, 0, None, 1)
        mask = torch.zeros(1, samples.shape[2], samples.shape[3])
        mask[:, 2:4, 2:4] = 1
        (grown,) = GrowMask().expand_mask(mask, 1, False)
        supports = feature_flags.supports_feature(PromptServer.instance.sockets_metadata,
                                                  PromptServer.instance.client_id or "", "supports_preview_metadata")
        assert supports in (True, False)
        return pasted.movedim(1, -1), grown


class MPWrapModule:
    """AnimateDiff/IPAdapter style: a ModelPatcher around the pack's own torch module, with weight patches."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"strength": ("FLOAT", {"default": 0.5})}}

    RETURN_TYPES = ("FLOAT", "FLOAT")
    FUNCTION = "run"
    CATEGORY = "model_pack"

    def run(self, strength):
        import torch

        module = torch.nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            module.weight.fill_(1.0)
        patcher = ModelPatcher(module, comfy.model_management.get_torch_device(),
                               comfy.model_management.unet_offload_device())
        clone = patcher.clone()
        clone.add_patches({"weight": (torch.ones(4, 4),)}, strength)
        comfy.model_management.load_models_gpu([clone])
        patched = float(module.weight[0, 0])
        clone.unpatch_model(comfy.model_management.unet_offload_device())
        x = torch.randn(1, 2, 8)
        out = optimized_attention(x, x, x, heads=2)
        assert out.shape == x.shape and wrap_attn(optimized_attention) is optimized_attention
        return patched, float(module.weight[0, 0])


class MPSeamless:
    """comfy_mtb style: deep-copy the MODEL and switch the copy's convolutions to circular padding."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL", "MODEL")
    FUNCTION = "hack"
    CATEGORY = "model_pack"

    def hack(self, model):
        import copy

        import torch

        hacked = copy.deepcopy(model)
        for layer in hacked.model.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.padding_mode = "circular"
        circular = [m for m in model.model.modules() if getattr(m, "padding_mode", None) == "circular"]
        assert not circular, "the original MODEL's network changed with its deep copy"
        return model, hacked


class MPStats:
    """Reports what it receives in its ui output, so a test can compare values across nodes."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"latent": ("LATENT",), "image": ("IMAGE",), "mask": ("MASK",),
                                             "a": ("FLOAT", {"forceInput": True}),
                                             "b": ("FLOAT", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "model_pack"

    def report(self, latent=None, image=None, mask=None, a=None, b=None):
        ui = {}
        if latent is not None:
            t = latent["samples"]
            ui["latent"] = [{"shape": list(t.shape), "head": t.flatten()[:32].tolist(), "sum": float(t.double().sum())}]
        for name, t in (("image", image), ("mask", mask)):
            if t is not None:
                ui[name] = [{"shape": list(t.shape), "sum": float(t.double().sum())}]
        if a is not None:
            ui["floats"] = [a, b]
        return {"ui": ui}


NODE_CLASS_MAPPINGS = {"MPStats": MPStats,
    "MPLoadCheckpoint": MPLoadCheckpoint, "MPPatchModel": MPPatchModel, "MPSample": MPSample,
    "MPGuiderSample": MPGuiderSample, "MPSeamless": MPSeamless, "MPImageTools": MPImageTools, "MPWrapModule": MPWrapModule,
}
_ = (CLIPTextEncode, VAEDecode, common_ksampler, MAX_RESOLUTION, cli_args.preview_method)
