"""Image-prompt nodes: CLIP vision encoding, style models, unCLIP and GLIGEN conditioning."""

from __future__ import annotations

from typing import Any

from . import context
from .common import MAX_RESOLUTION, NodeDef

Conditioning = list[list[Any]]


def set_values(conditioning: Conditioning, values: dict[str, Any], append: bool = False) -> Conditioning:
    """ComfyUI's ``node_helpers.conditioning_set_values``: copies with ``values`` set (lists appended)."""
    out = []
    for tensor, options in conditioning:
        options = options.copy()
        for key, value in values.items():
            if append and options.get(key) is not None:
                value = options[key] + value
            options[key] = value
        out.append([tensor, options])
    return out


class CLIPVisionLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip_name": (context.list_files("clip_vision"),)}}

    def load_clip(self, clip_name: str) -> tuple[Any]:
        from ..model.clip_vision import load

        return (load(context.full_path("clip_vision", clip_name)),)


class CLIPVisionEncode:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip_vision": ("CLIP_VISION",), "image": ("IMAGE",), "crop": (["center", "none"],)}}

    def encode(self, clip_vision: Any, image: Any, crop: str) -> tuple[Any]:
        return (clip_vision.encode_image(image, crop=crop == "center"),)


class StyleModelLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("STYLE_MODEL",)
    FUNCTION = "load_style_model"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"style_model_name": (context.list_files("style_models"),)}}

    def load_style_model(self, style_model_name: str) -> tuple[Any]:
        from ..model.style_model import load_style_model

        return (load_style_model(context.full_path("style_models", style_model_name)),)


class StyleModelApply:
    """Appends the style model's tokens to every entry's text tokens.

    ``multiply`` scales the tokens; ``attn_bias`` leaves them and adds log(strength)
    to the attention towards them instead, through an ``attention_mask`` (also
    kept up to date when an entry already has one).
    """

    CATEGORY = "conditioning/style_model"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_stylemodel"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "style_model": ("STYLE_MODEL",),
                             "clip_vision_output": ("CLIP_VISION_OUTPUT",),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001}),
                             "strength_type": (["multiply", "attn_bias"],)}}

    def apply_stylemodel(self, conditioning: Conditioning, style_model: Any, clip_vision_output: Any, strength: float,
                         strength_type: str) -> tuple[Conditioning]:
        import torch

        cond = style_model.get_cond(clip_vision_output).flatten(start_dim=0, end_dim=1).unsqueeze(dim=0)
        if strength_type == "multiply":
            cond *= strength
        n = cond.shape[1]
        out = []
        for txt, keys in conditioning:
            keys = keys.copy()
            if "attention_mask" in keys or (strength_type == "attn_bias" and strength != 1.0):
                attn_bias = torch.log(torch.Tensor([strength if strength_type == "attn_bias" else 1.0]))
                mask_ref_size = keys.get("attention_mask_img_shape", (1, 1))
                n_ref = mask_ref_size[0] * mask_ref_size[1]
                n_txt = txt.shape[1]
                mask = keys.get("attention_mask", None)
                if mask is None:
                    mask = torch.zeros((txt.shape[0], n_txt + n_ref, n_txt + n_ref), dtype=torch.float16)
                if mask.dtype == torch.bool:
                    mask = torch.log(mask.to(dtype=torch.float16))
                new_mask = torch.zeros((txt.shape[0], n_txt + n + n_ref, n_txt + n + n_ref), dtype=torch.float16)
                new_mask[:, :n_txt, :n_txt] = mask[:, :n_txt, :n_txt]
                new_mask[:, :n_txt, n_txt + n:] = mask[:, :n_txt, n_txt:]
                new_mask[:, n_txt + n:, :n_txt] = mask[:, n_txt:, :n_txt]
                new_mask[:, n_txt + n:, n_txt + n:] = mask[:, n_txt:, n_txt:]
                new_mask[:, :n_txt, n_txt:n_txt + n] = attn_bias
                new_mask[:, n_txt + n:, n_txt:n_txt + n] = attn_bias
                keys["attention_mask"] = new_mask.to(txt.device)
                keys["attention_mask_img_shape"] = mask_ref_size
            out.append([torch.cat((txt, cond.to(txt.device)), dim=1), keys])
        return (out,)


class unCLIPConditioning:  # noqa: N801 - ComfyUI's class name
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_adm"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "clip_vision_output": ("CLIP_VISION_OUTPUT",),
                             "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
                             "noise_augmentation": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def apply_adm(self, conditioning: Conditioning, clip_vision_output: Any, strength: float,
                  noise_augmentation: float) -> tuple[Conditioning]:
        if strength == 0:
            return (conditioning,)
        entry = {"clip_vision_output": clip_vision_output, "strength": strength,
                 "noise_augmentation": noise_augmentation}
        return (set_values(conditioning, {"unclip_conditioning": [entry]}, append=True),)


class unCLIPCheckpointLoader:  # noqa: N801 - ComfyUI's class name
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE", "CLIP_VISION")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": (context.list_files("checkpoints"),)}}

    def load_checkpoint(self, ckpt_name: str, output_vae: bool = True, output_clip: bool = True) -> tuple:
        from ..model.loading import load_checkpoint
        from ..model.unclip import checkpoint_clip_vision

        path = context.full_path("checkpoints", ckpt_name)
        model, clip, vae = load_checkpoint(path, embedding_directory=context.embedding_directory)
        return (model, clip, vae, checkpoint_clip_vision(path, model))


class GLIGENLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("GLIGEN",)
    FUNCTION = "load_gligen"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"gligen_name": (context.list_files("gligen"),)}}

    def load_gligen(self, gligen_name: str) -> tuple[Any]:
        from ..model.gligen import load_gligen

        return (load_gligen(context.full_path("gligen", gligen_name)),)


class GLIGENTextBoxApply:
    """Grounds a phrase in a box: the box (pixels, rounded down to latent units) and the phrase's pooled embedding."""

    CATEGORY = "conditioning/gligen"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"min": 8, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"conditioning_to": ("CONDITIONING",), "clip": ("CLIP",),
                             "gligen_textbox_model": ("GLIGEN",),
                             "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                             "width": ("INT", {"default": 64, **size}), "height": ("INT", {"default": 64, **size}),
                             "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
                             "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})}}

    def append(self, conditioning_to: Conditioning, clip: Any, gligen_textbox_model: Any, text: str, width: int,
               height: int, x: int, y: int) -> tuple[Conditioning]:
        _, cond_pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled="unprojected")
        out = []
        for tensor, options in conditioning_to:
            options = options.copy()
            position = [(cond_pooled, height // 8, width // 8, y // 8, x // 8)]
            previous = options["gligen"][2] if "gligen" in options else []
            options["gligen"] = ("position", gligen_textbox_model, previous + position)
            out.append([tensor, options])
        return (out,)


NODES = [
    NodeDef("CLIPVisionLoader", CLIPVisionLoader, "Load CLIP Vision", "nodes"),
    NodeDef("CLIPVisionEncode", CLIPVisionEncode, "CLIP Vision Encode", "nodes"),
    NodeDef("StyleModelLoader", StyleModelLoader, "Load Style Model", "nodes"),
    NodeDef("StyleModelApply", StyleModelApply, "Apply Style Model", "nodes"),
    NodeDef("unCLIPConditioning", unCLIPConditioning, "unCLIPConditioning", "nodes"),
    NodeDef("unCLIPCheckpointLoader", unCLIPCheckpointLoader, "unCLIPCheckpointLoader", "nodes"),
    NodeDef("GLIGENLoader", GLIGENLoader, "GLIGENLoader", "nodes"),
    NodeDef("GLIGENTextBoxApply", GLIGENTextBoxApply, "GLIGENTextBoxApply", "nodes"),
]
