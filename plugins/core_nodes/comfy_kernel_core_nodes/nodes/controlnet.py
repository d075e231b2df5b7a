"""ControlNet nodes: load a control model, apply it to conditioning with a hint image.

Applying does not run anything: each conditioning entry gets a copy of the
CONTROL_NET with the hint, strength and step range (chained after the one it
already had), and the sampler evaluates the chain at every step. Entries that
shared a ControlNet share the new one, so the sampler can batch them.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from . import context
from .common import NodeDef

STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
PERCENT_START = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001})
PERCENT_END = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001})


class ControlNetLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"control_net_name": (context.list_files("controlnet"),)}}

    def load_controlnet(self, control_net_name: str) -> tuple[Any]:
        from ..model.controlnet import load_controlnet

        return (load_controlnet(context.full_path("controlnet", control_net_name)),)


class DiffControlNetLoader:
    """A ControlNet stored as its difference to a UNet: the given MODEL's weights are added on load."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "control_net_name": (context.list_files("controlnet"),)}}

    def load_controlnet(self, model: Any, control_net_name: str) -> tuple[Any]:
        from ..model.controlnet import load_controlnet

        return (load_controlnet(context.full_path("controlnet", control_net_name), model),)


class ControlNetApply:
    CATEGORY = "conditioning/controlnet"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_controlnet"
    DEPRECATED = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "control_net": ("CONTROL_NET",),
                             "image": ("IMAGE",), "strength": STRENGTH}}

    def apply_controlnet(self, conditioning: list, control_net: Any, image: Any, strength: float) -> tuple[list]:
        if strength == 0:
            return (conditioning,)
        hint = image.movedim(-1, 1)
        out = []
        for tensor, options in conditioning:
            options = options.copy()
            c_net = control_net.copy().set_cond_hint(hint, strength)
            if "control" in options:
                c_net.set_previous_controlnet(options["control"])
            options["control"] = c_net
            options["control_apply_to_uncond"] = True
            out.append([tensor, options])
        return (out,)


class ControlNetApplyAdvanced:
    CATEGORY = "conditioning/controlnet"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "control_net": ("CONTROL_NET",), "image": ("IMAGE",), "strength": STRENGTH,
                             "start_percent": PERCENT_START, "end_percent": PERCENT_END},
                "optional": {"vae": ("VAE",)}}

    def apply_controlnet(self, positive: list, negative: list, control_net: Any, image: Any, strength: float,
                         start_percent: float, end_percent: float, vae: Any = None,
                         extra_concat: list | None = None) -> tuple[list, list]:
        if strength == 0:
            return (positive, negative)
        hint = image.movedim(-1, 1)
        made: list[tuple[Any, Any]] = []  # previous ControlNet -> its new copy, by identity
        out = []
        for conditioning in (positive, negative):
            entries = []
            for tensor, options in conditioning:
                options = options.copy()
                previous = options.get("control")
                c_net = next((new for old, new in made if old is previous), None)
                if c_net is None:
                    c_net = control_net.copy().set_cond_hint(hint, strength, (start_percent, end_percent), vae=vae,
                                                             extra_concat=extra_concat or [])
                    c_net.set_previous_controlnet(previous)
                    made.append((previous, c_net))
                options["control"] = c_net
                options["control_apply_to_uncond"] = False
                entries.append([tensor, options])
            out.append(entries)
        return (out[0], out[1])


#: SetUnionControlNetType's choices (the union ControlNets' task types), as literals so no torch is needed.
UNION_TYPES = ("openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd", "normal", "segment",
               "tile", "repaint")


class SetUnionControlNetType:
    CATEGORY = "conditioning/controlnet"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "set_controlnet_type"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"control_net": ("CONTROL_NET",), "type": (["auto"] + list(UNION_TYPES),)}}

    def set_controlnet_type(self, control_net: Any, type: str) -> tuple[Any]:
        control_net = control_net.copy()
        number = UNION_TYPES.index(type) if type in UNION_TYPES else -1
        control_net.set_extra_arg("control_type", [number] if number >= 0 else [])
        return (control_net,)


class ControlNetInpaintingAliMamaApply(ControlNetApplyAdvanced):
    """Inpainting ControlNets: the masked area is blanked in the hint and the mask goes in as an extra channel."""

    FUNCTION = "apply_inpaint_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "control_net": ("CONTROL_NET",), "vae": ("VAE",), "image": ("IMAGE",),
                             "mask": ("MASK",), "strength": STRENGTH, "start_percent": PERCENT_START,
                             "end_percent": PERCENT_END}}

    def apply_inpaint_controlnet(self, positive: list, negative: list, control_net: Any, vae: Any, image: Any,
                                 mask: Any, strength: float, start_percent: float,
                                 end_percent: float) -> tuple[list, list]:
        from comfy_kernel.nodes.resize import common_upscale

        extra_concat = []
        if control_net.concat_mask:
            mask = 1.0 - mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
            mask_apply = common_upscale(mask, image.shape[2], image.shape[1], "bilinear", "center").round()
            image = image * mask_apply.movedim(1, -1).repeat(1, 1, 1, image.shape[3])
            extra_concat = [mask]
        return self.apply_controlnet(positive, negative, control_net, image, strength, start_percent, end_percent,
                                     vae=vae, extra_concat=extra_concat)


class CLIPTextEncodeControlnet(io.ComfyNode):
    """Gives ControlNets their own text: each entry keeps its prompt for the diffusion model, while the
    ControlNets applied to it read ``text``'s encoding (``cross_attn_controlnet``) instead."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CLIPTextEncodeControlnet", category="_for_testing/conditioning", inputs=[
            io.Clip.Input("clip"),
            io.Conditioning.Input("conditioning"),
            io.String.Input("text", multiline=True, dynamic_prompts=True),
        ], outputs=[io.Conditioning.Output()], is_experimental=True)

    @classmethod
    def execute(cls, clip: Any, conditioning: list, text: str) -> io.NodeOutput:
        cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        return io.NodeOutput([[c, {**extra, "cross_attn_controlnet": cond, "pooled_output_controlnet": pooled}]
                              for c, extra in conditioning])


NODES = [
    NodeDef("ControlNetLoader", ControlNetLoader, "Load ControlNet Model", "nodes"),
    NodeDef("DiffControlNetLoader", DiffControlNetLoader, "Load ControlNet Model (diff)", "nodes"),
    NodeDef("ControlNetApply", ControlNetApply, "Apply ControlNet (OLD)", "nodes"),
    NodeDef("ControlNetApplyAdvanced", ControlNetApplyAdvanced, "Apply ControlNet", "nodes"),
    NodeDef("SetUnionControlNetType", SetUnionControlNetType, "SetUnionControlNetType",
            "comfy_extras.nodes_controlnet"),
    NodeDef("ControlNetInpaintingAliMamaApply", ControlNetInpaintingAliMamaApply, "ControlNetInpaintingAliMamaApply",
            "comfy_extras.nodes_controlnet"),
    NodeDef("CLIPTextEncodeControlnet", CLIPTextEncodeControlnet, None, "comfy_extras.nodes_cond"),
]
