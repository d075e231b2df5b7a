"""Text encoding and CONDITIONING manipulation nodes.

A CONDITIONING value is ComfyUI's list of ``[tensor [B, tokens, width], options]``
pairs; ``options`` always carries ``pooled_output`` and may add ``area``,
``mask``, ``strength``, ``mask_strength``, ``set_area_to_bounds``,
``start_percent`` / ``end_percent`` and ``control``, which the sampler's
guidance reads (sampling/guider.py). Nodes never modify their inputs in place:
they return new lists with copied option dicts.
"""

from __future__ import annotations

from typing import Any

from .common import MAX_RESOLUTION, NodeDef

Conditioning = list[list[Any]]


class CLIPTextEncode:
    DESCRIPTION = "Turns a text prompt into the conditioning that steers the diffusion model."
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The encoded prompt, to feed a sampler's positive or negative input.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                    "tooltip": "The prompt; supports (word:1.2) weights and embedding:name."}),
                "clip": ("CLIP", {"tooltip": "The text encoder to run."}),
            }
        }

    def encode(self, clip: Any, text: str) -> tuple[Conditioning]:
        if clip is None:
            raise RuntimeError("ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader "
                               "node your checkpoint does not contain a valid clip or text encoder model.")
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text)),)


class CLIPSetLastLayer:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip": ("CLIP",),
                             "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1})}}

    def set_last_layer(self, clip: Any, stop_at_clip_layer: int) -> tuple[Any]:
        clip = clip.clone()
        clip.clip_layer(int(stop_at_clip_layer))
        return (clip,)


def _copy(conditioning: Conditioning) -> Conditioning:
    return [[t, dict(opts)] for t, opts in conditioning]


class ConditioningCombine:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)}}

    def combine(self, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (_copy(conditioning_1) + _copy(conditioning_2),)


class ConditioningAverage:
    """Blend every entry of ``conditioning_to`` with the first entry of ``conditioning_from``."""

    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "addWeighted"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning_to": ("CONDITIONING",), "conditioning_from": ("CONDITIONING",),
                             "conditioning_to_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0,
                                                                    "step": 0.01})}}

    def addWeighted(self, conditioning_to: Conditioning, conditioning_from: Conditioning,
                    conditioning_to_strength: float) -> tuple[Conditioning]:
        import torch

        if not conditioning_from:
            return (_copy(conditioning_to),)
        w = float(conditioning_to_strength)
        source, source_opts = conditioning_from[0]
        source_pooled = source_opts.get("pooled_output")
        out = []
        for tensor, opts in conditioning_to:
            src = source[:, : tensor.shape[1]]
            if src.shape[1] < tensor.shape[1]:
                pad = torch.zeros((src.shape[0], tensor.shape[1] - src.shape[1], src.shape[2]), dtype=src.dtype)
                src = torch.cat([src, pad], dim=1)
            new_opts = dict(opts)
            pooled = opts.get("pooled_output")
            if pooled is not None and source_pooled is not None:
                new_opts["pooled_output"] = pooled * w + source_pooled * (1.0 - w)
            elif source_pooled is not None:
                new_opts["pooled_output"] = source_pooled
            out.append([tensor * w + src * (1.0 - w), new_opts])
        return (out,)


class ConditioningConcat:
    """Append the first entry of ``conditioning_from`` to every entry along the token axis."""

    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "concat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning_to": ("CONDITIONING",), "conditioning_from": ("CONDITIONING",)}}

    def concat(self, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple[Conditioning]:
        import torch

        if not conditioning_from:
            return (_copy(conditioning_to),)
        source = conditioning_from[0][0]
        return ([[torch.cat([t, source], dim=1), dict(opts)] for t, opts in conditioning_to],)


class ConditioningSetArea:
    """Restrict conditioning to a rectangle (pixels, stored in latent units as ComfyUI does)."""

    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8}
        pos = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"conditioning": ("CONDITIONING",), "width": ("INT", size), "height": ("INT", size),
                             "x": ("INT", pos), "y": ("INT", pos),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})}}

    def append(self, conditioning: Conditioning, width: int, height: int, x: int, y: int,
               strength: float) -> tuple[Conditioning]:
        out = _copy(conditioning)
        for _, opts in out:
            opts["area"] = (height // 8, width // 8, y // 8, x // 8)
            opts["strength"] = float(strength)
            opts["set_area_to_bounds"] = False
        return (out,)


class ConditioningSetMask:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "mask": ("MASK",),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}),
                             "set_cond_area": (["default", "mask bounds"],)}}

    def append(self, conditioning: Conditioning, mask: Any, strength: float,
               set_cond_area: str) -> tuple[Conditioning]:
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        out = _copy(conditioning)
        for _, opts in out:
            opts["mask"] = mask
            opts["set_area_to_bounds"] = set_cond_area != "default"
            opts["mask_strength"] = float(strength)
        return (out,)


class ConditioningZeroOut:
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "zero_out"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",)}}

    def zero_out(self, conditioning: Conditioning) -> tuple[Conditioning]:
        import torch

        out = []
        for tensor, opts in conditioning:
            new_opts = dict(opts)
            for key in ("pooled_output", "conditioning_lyrics"):  # the lyrics: ACE-Step's second text input
                if new_opts.get(key) is not None:
                    new_opts[key] = torch.zeros_like(new_opts[key])
            out.append([torch.zeros_like(tensor), new_opts])
        return (out,)


NODES = [
    NodeDef("CLIPTextEncode", CLIPTextEncode, "CLIP Text Encode (Prompt)", "nodes"),
    NodeDef("CLIPSetLastLayer", CLIPSetLastLayer, "CLIP Set Last Layer", "nodes"),
    NodeDef("ConditioningAverage", ConditioningAverage, "ConditioningAverage", "nodes"),
    NodeDef("ConditioningCombine", ConditioningCombine, "Conditioning (Combine)", "nodes"),
    NodeDef("ConditioningConcat", ConditioningConcat, "Conditioning (Concat)", "nodes"),
    NodeDef("ConditioningSetArea", ConditioningSetArea, "Conditioning (Set Area)", "nodes"),
    NodeDef("ConditioningSetMask", ConditioningSetMask, "Conditioning (Set Mask)", "nodes"),
    NodeDef("ConditioningZeroOut", ConditioningZeroOut, "ConditioningZeroOut", "nodes"),
]
