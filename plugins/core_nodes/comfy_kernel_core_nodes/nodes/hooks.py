"""Hook nodes (ComfyUI's comfy_extras.nodes_hooks): create, schedule, combine and attach hooks.

A hook attached to conditioning (the ``hooks`` input of the Cond Set Props
nodes, or a CLIP set with Set CLIP Hooks) changes the model only while the
sampler evaluates those entries; keyframes set its strength per step range.
See model/hooks.py and sampling/hooks.py for how they run.
"""

from __future__ import annotations

import threading
from typing import Any

from . import context
from .common import NodeDef

MODULE = "comfy_extras.nodes_hooks"
STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
AREA = (["default", "mask bounds"],)
HOOK_STRENGTH = ("FLOAT", {"default": 1.0, "min": -20.0, "max": 20.0, "step": 0.01})
PERCENT_START = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001})
PERCENT_END = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001})
PROPERTIES = {"mask": ("MASK",), "hooks": ("HOOKS",), "timesteps": ("TIMESTEPS_RANGE",)}


def _h() -> Any:
    from ..model import hooks

    return hooks


class _HookNode:
    EXPERIMENTAL = True


class PairConditioningSetProperties(_HookNode):
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    CATEGORY = "advanced/hooks/cond pair"
    FUNCTION = "set_properties"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive_NEW": ("CONDITIONING",), "negative_NEW": ("CONDITIONING",),
                             "strength": STRENGTH, "set_cond_area": AREA},
                "optional": dict(PROPERTIES)}

    def set_properties(self, positive_NEW: list, negative_NEW: list, strength: float, set_cond_area: str,
                       mask: Any = None, hooks: Any = None, timesteps: tuple | None = None) -> tuple[list, list]:
        positive, negative = _h().set_conds_props([positive_NEW, negative_NEW], strength, set_cond_area, mask=mask,
                                                  hooks=hooks, timesteps_range=timesteps)
        return (positive, negative)


class PairConditioningSetPropertiesAndCombine(_HookNode):
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    CATEGORY = "advanced/hooks/cond pair"
    FUNCTION = "set_properties"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "positive_NEW": ("CONDITIONING",), "negative_NEW": ("CONDITIONING",),
                             "strength": STRENGTH, "set_cond_area": AREA},
                "optional": dict(PROPERTIES)}

    def set_properties(self, positive: list, negative: list, positive_NEW: list, negative_NEW: list, strength: float,
                       set_cond_area: str, mask: Any = None, hooks: Any = None,
                       timesteps: tuple | None = None) -> tuple[list, list]:
        pos, neg = _h().set_conds_props_and_combine([positive, negative], [positive_NEW, negative_NEW], strength,
                                                    set_cond_area, mask=mask, hooks=hooks, timesteps_range=timesteps)
        return (pos, neg)


class ConditioningSetProperties(_HookNode):
    RETURN_TYPES = ("CONDITIONING",)
    CATEGORY = "advanced/hooks/cond single"
    FUNCTION = "set_properties"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"cond_NEW": ("CONDITIONING",), "strength": STRENGTH, "set_cond_area": AREA},
                "optional": dict(PROPERTIES)}

    def set_properties(self, cond_NEW: list, strength: float, set_cond_area: str, mask: Any = None,
                       hooks: Any = None, timesteps: tuple | None = None) -> tuple[list]:
        (cond,) = _h().set_conds_props([cond_NEW], strength, set_cond_area, mask=mask, hooks=hooks,
                                       timesteps_range=timesteps)
        return (cond,)


class ConditioningSetPropertiesAndCombine(_HookNode):
    RETURN_TYPES = ("CONDITIONING",)
    CATEGORY = "advanced/hooks/cond single"
    FUNCTION = "set_properties"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"cond": ("CONDITIONING",), "cond_NEW": ("CONDITIONING",), "strength": STRENGTH,
                             "set_cond_area": AREA},
                "optional": dict(PROPERTIES)}

    def set_properties(self, cond: list, cond_NEW: list, strength: float, set_cond_area: str, mask: Any = None,
                       hooks: Any = None, timesteps: tuple | None = None) -> tuple[list]:
        (out,) = _h().set_conds_props_and_combine([cond], [cond_NEW], strength, set_cond_area, mask=mask,
                                                  hooks=hooks, timesteps_range=timesteps)
        return (out,)


class PairConditioningCombine(_HookNode):
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    CATEGORY = "advanced/hooks/cond pair"
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive_A": ("CONDITIONING",), "negative_A": ("CONDITIONING",),
                             "positive_B": ("CONDITIONING",), "negative_B": ("CONDITIONING",)}}

    def combine(self, positive_A: list, negative_A: list, positive_B: list, negative_B: list) -> tuple[list, list]:
        pos, neg = _h().set_conds_props_and_combine([positive_A, negative_A], [positive_B, negative_B])
        return (pos, neg)


class PairConditioningSetDefaultCombine(_HookNode):
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    CATEGORY = "advanced/hooks/cond pair"
    FUNCTION = "set_default_and_combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "positive_DEFAULT": ("CONDITIONING",), "negative_DEFAULT": ("CONDITIONING",)},
                "optional": {"hooks": ("HOOKS",)}}

    def set_default_and_combine(self, positive: list, negative: list, positive_DEFAULT: list, negative_DEFAULT: list,
                                hooks: Any = None) -> tuple[list, list]:
        pos, neg = _h().set_default_conds_and_combine([positive, negative], [positive_DEFAULT, negative_DEFAULT],
                                                      hooks=hooks)
        return (pos, neg)


class ConditioningSetDefaultCombine(_HookNode):
    RETURN_TYPES = ("CONDITIONING",)
    CATEGORY = "advanced/hooks/cond single"
    FUNCTION = "set_default_and_combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"cond": ("CONDITIONING",), "cond_DEFAULT": ("CONDITIONING",)},
                "optional": {"hooks": ("HOOKS",)}}

    def set_default_and_combine(self, cond: list, cond_DEFAULT: list, hooks: Any = None) -> tuple[list]:
        (out,) = _h().set_default_conds_and_combine([cond], [cond_DEFAULT], hooks=hooks)
        return (out,)


class SetClipHooks(_HookNode):
    """The hooks' weights are used whenever this CLIP encodes (per keyframe range with schedule_clip)."""

    RETURN_TYPES = ("CLIP",)
    CATEGORY = "advanced/hooks/clip"
    FUNCTION = "apply_hooks"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip": ("CLIP",), "apply_to_conds": ("BOOLEAN", {"default": True}),
                             "schedule_clip": ("BOOLEAN", {"default": False})},
                "optional": {"hooks": ("HOOKS",)}}

    def apply_hooks(self, clip: Any, schedule_clip: bool, apply_to_conds: bool, hooks: Any = None) -> tuple[Any]:
        if hooks is not None:
            H = _h()
            clip = clip.clone()
            if apply_to_conds:
                clip.apply_hooks_to_conds = hooks
            clip.patcher.forced_hooks = hooks.clone()
            clip.use_clip_schedule = schedule_clip
            if not clip.use_clip_schedule:
                clip.patcher.forced_hooks.set_keyframes_on_hooks(None)
            clip.patcher.register_all_hook_patches(hooks, H.create_target_dict(H.EnumWeightTarget.Clip))
        return (clip,)


class ConditioningTimestepsRange(_HookNode):
    RETURN_TYPES = ("TIMESTEPS_RANGE", "TIMESTEPS_RANGE", "TIMESTEPS_RANGE")
    RETURN_NAMES = ("TIMESTEPS_RANGE", "BEFORE_RANGE", "AFTER_RANGE")
    CATEGORY = "advanced/hooks"
    FUNCTION = "create_range"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"start_percent": PERCENT_START, "end_percent": PERCENT_END}}

    def create_range(self, start_percent: float, end_percent: float) -> tuple:
        return ((start_percent, end_percent), (0.0, start_percent), (end_percent, 1.0))


# --- creating hooks ----------------------------------------------------------------------------

_MODEL_WEIGHTS: dict[str, Any] = {}
_LOCK = threading.Lock()


class CreateHookLora(_HookNode):
    RETURN_TYPES = ("HOOKS",)
    CATEGORY = "advanced/hooks/create"
    FUNCTION = "create_hook"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"lora_name": (context.list_files("loras"),), "strength_model": HOOK_STRENGTH,
                             "strength_clip": HOOK_STRENGTH},
                "optional": {"prev_hooks": ("HOOKS",)}}

    def create_hook(self, lora_name: str, strength_model: float, strength_clip: float,
                    prev_hooks: Any = None) -> tuple[Any]:
        from .lora import _read_lora

        H = _h()
        prev_hooks = H.HookGroup() if prev_hooks is None else prev_hooks
        if strength_model == 0 and strength_clip == 0:
            return (prev_hooks,)
        lora, _, _ = _read_lora(context.full_path("loras", lora_name))
        hooks = H.create_hook_lora(lora=lora, strength_model=strength_model, strength_clip=strength_clip)
        return (prev_hooks.clone_and_combine(hooks),)


class CreateHookLoraModelOnly(CreateHookLora):
    FUNCTION = "create_hook_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"lora_name": (context.list_files("loras"),), "strength_model": HOOK_STRENGTH},
                "optional": {"prev_hooks": ("HOOKS",)}}

    def create_hook_model_only(self, lora_name: str, strength_model: float, prev_hooks: Any = None) -> tuple[Any]:
        return self.create_hook(lora_name, strength_model, 0, prev_hooks)


class CreateHookModelAsLora(_HookNode):
    """The difference between another checkpoint and the sampled model, applied as a hook."""

    RETURN_TYPES = ("HOOKS",)
    CATEGORY = "advanced/hooks/create"
    FUNCTION = "create_hook"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": (context.list_files("checkpoints"),), "strength_model": HOOK_STRENGTH,
                             "strength_clip": HOOK_STRENGTH},
                "optional": {"prev_hooks": ("HOOKS",)}}

    def create_hook(self, ckpt_name: str, strength_model: float, strength_clip: float,
                    prev_hooks: Any = None) -> tuple[Any]:
        from ..model.files import file_identity
        from ..model.loading import load_checkpoint

        H = _h()
        prev_hooks = H.HookGroup() if prev_hooks is None else prev_hooks
        path = context.full_path("checkpoints", ckpt_name)
        identity = file_identity(path)
        with _LOCK:
            cached = _MODEL_WEIGHTS.get(identity)
            if cached is None:
                model, clip, _ = load_checkpoint(path, output_vae=False,
                                                 embedding_directory=context.embedding_directory)
                cached = (H.get_patch_weights_from_model(model),
                          H.get_patch_weights_from_model(clip.patcher if clip else None))
                _MODEL_WEIGHTS.clear()
                _MODEL_WEIGHTS[identity] = cached
        hooks = H.create_hook_model_as_lora(cached[0], cached[1], strength_model, strength_clip)
        return (prev_hooks.clone_and_combine(hooks),)


class CreateHookModelAsLoraModelOnly(CreateHookModelAsLora):
    FUNCTION = "create_hook_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": (context.list_files("checkpoints"),), "strength_model": HOOK_STRENGTH},
                "optional": {"prev_hooks": ("HOOKS",)}}

    def create_hook_model_only(self, ckpt_name: str, strength_model: float, prev_hooks: Any = None) -> tuple[Any]:
        return self.create_hook(ckpt_name, strength_model, 0.0, prev_hooks)


# --- scheduling --------------------------------------------------------------------------------


class SetHookKeyframes(_HookNode):
    RETURN_TYPES = ("HOOKS",)
    CATEGORY = "advanced/hooks/scheduling"
    FUNCTION = "set_hook_keyframes"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"hooks": ("HOOKS",)}, "optional": {"hook_kf": ("HOOK_KEYFRAMES",)}}

    def set_hook_keyframes(self, hooks: Any, hook_kf: Any = None) -> tuple[Any]:
        if hook_kf is not None:
            hooks = hooks.clone()
            hooks.set_keyframes_on_hooks(hook_kf=hook_kf)
        return (hooks,)


class CreateHookKeyframe(_HookNode):
    RETURN_TYPES = ("HOOK_KEYFRAMES",)
    RETURN_NAMES = ("HOOK_KF",)
    CATEGORY = "advanced/hooks/scheduling"
    FUNCTION = "create_hook_keyframe"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"strength_mult": HOOK_STRENGTH, "start_percent": PERCENT_START},
                "optional": {"prev_hook_kf": ("HOOK_KEYFRAMES",)}}

    def create_hook_keyframe(self, strength_mult: float, start_percent: float, prev_hook_kf: Any = None) -> tuple:
        H = _h()
        group = H.HookKeyframeGroup() if prev_hook_kf is None else prev_hook_kf.clone()
        group.add(H.HookKeyframe(strength=strength_mult, start_percent=start_percent))
        return (group,)


def _add_keyframes(group: Any, percents: Any, strengths: Any, print_keyframes: bool) -> Any:
    import logging

    H = _h()
    for i, (percent, strength) in enumerate(zip(percents, strengths, strict=False)):
        group.add(H.HookKeyframe(strength=strength, start_percent=percent, guarantee_steps=1 if i == 0 else 0))
        if print_keyframes:
            logging.getLogger(__name__).info("Hook Keyframe - start_percent:%s = %s", percent, strength)
    return group


class CreateHookKeyframesInterpolated(_HookNode):
    RETURN_TYPES = ("HOOK_KEYFRAMES",)
    RETURN_NAMES = ("HOOK_KF",)
    CATEGORY = "advanced/hooks/scheduling"
    FUNCTION = "create_hook_keyframes"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        strength = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001})
        return {"required": {"strength_start": strength, "strength_end": strength,
                             "interpolation": (["linear", "ease_in", "ease_out", "ease_in_out"],),
                             "start_percent": PERCENT_START, "end_percent": PERCENT_END,
                             "keyframes_count": ("INT", {"default": 5, "min": 2, "max": 100, "step": 1}),
                             "print_keyframes": ("BOOLEAN", {"default": False})},
                "optional": {"prev_hook_kf": ("HOOK_KEYFRAMES",)}}

    def create_hook_keyframes(self, strength_start: float, strength_end: float, interpolation: str,
                              start_percent: float, end_percent: float, keyframes_count: int,
                              print_keyframes: bool = False, prev_hook_kf: Any = None) -> tuple:
        H = _h()
        group = H.HookKeyframeGroup() if prev_hook_kf is None else prev_hook_kf.clone()
        method = H.InterpolationMethod
        percents = method.get_weights(start_percent, end_percent, keyframes_count, method.LINEAR)
        strengths = method.get_weights(strength_start, strength_end, keyframes_count, interpolation)
        return (_add_keyframes(group, percents, strengths, print_keyframes),)


class CreateHookKeyframesFromFloats(_HookNode):
    RETURN_TYPES = ("HOOK_KEYFRAMES",)
    RETURN_NAMES = ("HOOK_KF",)
    CATEGORY = "advanced/hooks/scheduling"
    FUNCTION = "create_hook_keyframes"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"floats_strength": ("FLOATS", {"default": -1, "min": -1, "step": 0.001,
                                                            "forceInput": True}),
                             "start_percent": PERCENT_START, "end_percent": PERCENT_END,
                             "print_keyframes": ("BOOLEAN", {"default": False})},
                "optional": {"prev_hook_kf": ("HOOK_KEYFRAMES",)}}

    def create_hook_keyframes(self, floats_strength: Any, start_percent: float, end_percent: float,
                              prev_hook_kf: Any = None, print_keyframes: bool = False) -> tuple:
        from collections.abc import Iterable

        H = _h()
        group = H.HookKeyframeGroup() if prev_hook_kf is None else prev_hook_kf.clone()
        if isinstance(floats_strength, (float, int)):
            floats_strength = [float(floats_strength)]
        elif not isinstance(floats_strength, Iterable):
            raise TypeError(f"floats_strength must be either an iterable input or a float, but was "
                            f"{type(floats_strength).__name__}.")
        floats_strength = list(floats_strength)
        method = H.InterpolationMethod
        percents = method.get_weights(start_percent, end_percent, len(floats_strength), method.LINEAR)
        return (_add_keyframes(group, percents, floats_strength, print_keyframes),)


# --- combining ---------------------------------------------------------------------------------


def _combine(count: int) -> type:
    letters = "ABCDEFGH"[:count]

    def input_types(cls: type) -> dict[str, Any]:
        return {"required": {}, "optional": {f"hooks_{x}": ("HOOKS",) for x in letters}}

    def combine_hooks(self: Any, **hooks: Any) -> tuple[Any]:
        return (_h().HookGroup.combine_all_hooks([hooks.get(f"hooks_{x}") for x in letters]),)

    return type(f"CombineHooks{count}", (_HookNode,), {
        "RETURN_TYPES": ("HOOKS",), "CATEGORY": "advanced/hooks/combine", "FUNCTION": "combine_hooks",
        "INPUT_TYPES": classmethod(input_types), "combine_hooks": combine_hooks,
        "__doc__": f"Combines up to {count} hook groups (unconnected inputs are skipped)."})


NODES = [
    NodeDef("CreateHookLora", CreateHookLora, "Create Hook LoRA", MODULE),
    NodeDef("CreateHookLoraModelOnly", CreateHookLoraModelOnly, "Create Hook LoRA (MO)", MODULE),
    NodeDef("CreateHookModelAsLora", CreateHookModelAsLora, "Create Hook Model as LoRA", MODULE),
    NodeDef("CreateHookModelAsLoraModelOnly", CreateHookModelAsLoraModelOnly, "Create Hook Model as LoRA (MO)",
            MODULE),
    NodeDef("SetHookKeyframes", SetHookKeyframes, "Set Hook Keyframes", MODULE),
    NodeDef("CreateHookKeyframe", CreateHookKeyframe, "Create Hook Keyframe", MODULE),
    NodeDef("CreateHookKeyframesInterpolated", CreateHookKeyframesInterpolated, "Create Hook Keyframes Interp.",
            MODULE),
    NodeDef("CreateHookKeyframesFromFloats", CreateHookKeyframesFromFloats, "Create Hook Keyframes From Floats",
            MODULE),
    NodeDef("CombineHooks2", _combine(2), "Combine Hooks [2]", MODULE),
    NodeDef("CombineHooks4", _combine(4), "Combine Hooks [4]", MODULE),
    NodeDef("CombineHooks8", _combine(8), "Combine Hooks [8]", MODULE),
    NodeDef("ConditioningSetProperties", ConditioningSetProperties, "Cond Set Props", MODULE),
    NodeDef("ConditioningSetPropertiesAndCombine", ConditioningSetPropertiesAndCombine, "Cond Set Props Combine",
            MODULE),
    NodeDef("PairConditioningSetProperties", PairConditioningSetProperties, "Cond Pair Set Props", MODULE),
    NodeDef("PairConditioningSetPropertiesAndCombine", PairConditioningSetPropertiesAndCombine,
            "Cond Pair Set Props Combine", MODULE),
    NodeDef("ConditioningSetDefaultCombine", ConditioningSetDefaultCombine, "Cond Set Default Combine", MODULE),
    NodeDef("PairConditioningSetDefaultCombine", PairConditioningSetDefaultCombine, "Cond Pair Set Default Combine",
            MODULE),
    NodeDef("PairConditioningCombine", PairConditioningCombine, "Cond Pair Combine", MODULE),
    NodeDef("SetClipHooks", SetClipHooks, "Set CLIP Hooks", MODULE),
    NodeDef("ConditioningTimestepsRange", ConditioningTimestepsRange, "Timesteps Range", MODULE),
]
