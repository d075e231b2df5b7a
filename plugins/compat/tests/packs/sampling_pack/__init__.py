"""A pack that changes how sampling runs the way Advanced-ControlNet, AnimateDiff-Evolved and Easy-Use do.

- ``SPApplyControl`` wraps a loaded CONTROL_NET in a subclass of
  ``comfy.controlnet.ControlNet`` built as Advanced-ControlNet builds its
  own (``from_vanilla``: the network passed to the constructor; ``copy``:
  ``control_model`` and ``control_model_wrapped`` assigned on the copy).
- ``SPSwapSamplingFunction`` replaces ``comfy.samplers.sampling_function``
  while it samples and restores it after, as AnimateDiff-Evolved does for its
  context windows, and replaces ``disable_weight_init.GroupNorm``'s
  ``forward_comfy_cast_weights`` around it the same way.
- ``SPEncodeL`` encodes a prompt through ``cond_stage_model.clip_l`` as
  Easy-Use's prompt weighting does.
"""

import comfy.model_management
import comfy.ops
import comfy.sample
import comfy.samplers
import torch
from comfy.controlnet import ControlNet

SEEN = {"get_control": 0, "sampling_function": 0, "group_norm_cast": 0}


class CountingControlNet(ControlNet):
    def get_control(self, x_noisy, t, cond, batched_number, transformer_options=None):
        SEEN["get_control"] += 1
        return super().get_control(x_noisy, t, cond, batched_number, transformer_options)

    def copy(self):
        c = CountingControlNet(self.control_model, global_average_pooling=self.global_average_pooling,
                               load_device=self.load_device, manual_cast_dtype=self.manual_cast_dtype)
        c.control_model = self.control_model
        c.control_model_wrapped = self.control_model_wrapped
        self.copy_to(c)
        return c

    @staticmethod
    def from_vanilla(v):
        return CountingControlNet(control_model=v.control_model, global_average_pooling=v.global_average_pooling,
                                  compression_ratio=v.compression_ratio, latent_format=v.latent_format,
                                  load_device=v.load_device, manual_cast_dtype=v.manual_cast_dtype,
                                  extra_conds=v.extra_conds, strength_type=v.strength_type,
                                  concat_mask=v.concat_mask, preprocess_image=v.preprocess_image)


class SPApplyControl:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "control_net": ("CONTROL_NET",), "image": ("IMAGE",),
                             "strength": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    FUNCTION = "apply"
    CATEGORY = "sampling_pack"

    def apply(self, positive, negative, control_net, image, strength):
        advanced = CountingControlNet.from_vanilla(control_net)
        hint = image.movedim(-1, 1)
        made = {}
        out = []
        for conditioning in (positive, negative):
            new = []
            for tensor, options in conditioning:
                options = options.copy()
                previous = options.get("control")
                if id(previous) not in made:
                    c_net = advanced.copy().set_cond_hint(hint, strength, (0.0, 1.0))
                    c_net.set_previous_controlnet(previous)
                    made[id(previous)] = c_net
                options["control"] = made[id(previous)]
                options["control_apply_to_uncond"] = False
                new.append([tensor, options])
            out.append(new)
        return tuple(out)


class SPSwapSamplingFunction:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "latent_image": ("LATENT",), "seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "sampling_pack"

    def sample(self, model, positive, negative, latent_image, seed):
        original = comfy.samplers.sampling_function
        original_gn = comfy.ops.disable_weight_init.GroupNorm.forward_comfy_cast_weights

        def counting(*args, **kwargs):
            SEEN["sampling_function"] += 1
            return original(*args, **kwargs)

        def counting_gn(self, input):
            SEEN["group_norm_cast"] += 1
            return original_gn(self, input)

        comfy.samplers.sampling_function = counting
        comfy.ops.disable_weight_init.GroupNorm.forward_comfy_cast_weights = counting_gn
        try:
            layer = comfy.ops.disable_weight_init.GroupNorm(2, 4)
            layer.comfy_cast_weights = True
            layer(torch.ones(1, 4, 2, 2))
            latent = latent_image["samples"]
            noise = comfy.sample.prepare_noise(latent, seed)
            samples = comfy.sample.sample(model, noise, 2, 7.0, "euler", "normal", positive, negative, latent,
                                          denoise=1.0, seed=seed)
        finally:
            comfy.samplers.sampling_function = original
            comfy.ops.disable_weight_init.GroupNorm.forward_comfy_cast_weights = original_gn
        return ({"samples": samples},)


class SPEncodeL:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "sampling_pack"

    def encode(self, clip, text):
        tokens = clip.tokenize(text)
        comfy.model_management.load_model_gpu(clip.patcher)
        cond, pooled = clip.cond_stage_model.clip_l.encode_token_weights(tokens["l"])
        return ([[cond, {"pooled_output": pooled}]],)


class SPStats:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",)}}

    RETURN_TYPES = ()
    FUNCTION = "stats"
    OUTPUT_NODE = True
    CATEGORY = "sampling_pack"

    def stats(self, latent):
        s = latent["samples"]
        return {"ui": {"latent": [{"sum": float(s.double().sum()), "head": [float(v) for v in s.flatten()[:4]]}],
                       "seen": [dict(SEEN)]}}


NODE_CLASS_MAPPINGS = {"SPApplyControl": SPApplyControl, "SPSwapSamplingFunction": SPSwapSamplingFunction,
                       "SPEncodeL": SPEncodeL, "SPStats": SPStats}
