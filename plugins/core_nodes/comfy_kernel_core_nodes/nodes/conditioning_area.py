"""Conditioning options that need no model: area by percentage, area strength, timestep range.

Each node copies every ``[tensor, options]`` entry (the tensor itself is
shared, the options dict is new) and sets keys the samplers read:

- ConditioningSetAreaPercentage: ``area = ("percentage", h, w, y, x)`` as
  fractions of the latent, ``strength``, ``set_area_to_bounds = False``;
- ConditioningSetAreaPercentageVideo: ``area = ("percentage", t, h, w, z, y, x)``,
  ``strength``, ``set_area_to_bounds = False``;
- ConditioningSetAreaStrength: ``strength``;
- ConditioningSetTimestepRange: ``start_percent`` and ``end_percent``
  (fractions of the schedule, 0 = first step).
"""

from __future__ import annotations

from typing import Any

from .common import NodeDef

Conditioning = list[list[Any]]
STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})


def set_values(conditioning: Conditioning, values: dict[str, Any]) -> Conditioning:
    """New entries with ``values`` set in a copy of each options dict."""
    return [[tensor, {**options, **values}] for tensor, options in conditioning]


def _fraction(default: float) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", {"default": default, "min": 0, "max": 1.0, "step": 0.01})


class ConditioningSetAreaPercentage:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "width": _fraction(1.0), "height": _fraction(1.0),
                             "x": _fraction(0), "y": _fraction(0), "strength": STRENGTH}}

    def append(self, conditioning: Conditioning, width: float, height: float, x: float, y: float,
               strength: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"area": ("percentage", height, width, y, x), "strength": strength,
                                          "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentageVideo:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "width": _fraction(1.0), "height": _fraction(1.0),
                             "temporal": _fraction(1.0), "x": _fraction(0), "y": _fraction(0), "z": _fraction(0),
                             "strength": STRENGTH}}

    def append(self, conditioning: Conditioning, width: float, height: float, temporal: float, x: float,
               y: float, z: float, strength: float) -> tuple[Conditioning]:
        area = ("percentage", temporal, height, width, z, y, x)
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "strength": STRENGTH}}

    def append(self, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"strength": strength}),)


class ConditioningSetTimestepRange:
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "set_range"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        step = {"min": 0.0, "max": 1.0, "step": 0.001}
        return {"required": {"conditioning": ("CONDITIONING",), "start": ("FLOAT", {"default": 0.0, **step}),
                             "end": ("FLOAT", {"default": 1.0, **step})}}

    def set_range(self, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"start_percent": start, "end_percent": end}),)


NODES = [
    NodeDef("ConditioningSetAreaPercentage", ConditioningSetAreaPercentage,
            "Conditioning (Set Area with Percentage)", "nodes"),
    NodeDef("ConditioningSetAreaStrength", ConditioningSetAreaStrength, "ConditioningSetAreaStrength", "nodes"),
    NodeDef("ConditioningSetTimestepRange", ConditioningSetTimestepRange, "ConditioningSetTimestepRange", "nodes"),
    NodeDef("ConditioningSetAreaPercentageVideo", ConditioningSetAreaPercentageVideo,
            "ConditioningSetAreaPercentageVideo", "comfy_extras.nodes_video_model"),
]
