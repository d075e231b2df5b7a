"""Hooks: changes to a model that apply only to the conditioning entries carrying them (ComfyUI's ``comfy.hooks``).

A HOOKS value is a :class:`HookGroup`. The kind that matters most is the
:class:`WeightHook` (CreateHookLora, CreateHookModelAsLora): a LoRA or a
model difference whose weights the sampler uses only while it evaluates the
entries whose ``hooks`` contain it, at the strength its keyframes give for the
current step (:class:`HookKeyframeGroup`). On a CLIP (SetClipHooks) the hook's
weights are used when encoding, optionally re-encoding per keyframe range.

How it runs here: the sampler groups the entries by their hook group, and for
a group with weight hooks runs the model with a second set of weights, a
model manager entry keyed by the base model, the hooks and their current
strengths (``ModelPatcher.use_hooks``), so the base weights are never touched
and a schedule that returns to a strength reuses what was loaded.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


class EnumHookMode(enum.Enum):
    """Memory versus speed for hook weights (kept for node packs; weights are manager entries either way)."""

    MinVram = "minvram"
    MaxSpeed = "maxspeed"


class EnumHookType(enum.Enum):
    Weight = "weight"
    ObjectPatch = "object_patch"
    AdditionalModels = "add_models"
    TransformerOptions = "transformer_options"
    Injections = "add_injections"


class EnumWeightTarget(enum.Enum):
    Model = "model"
    Clip = "clip"


class EnumHookScope(enum.Enum):
    """AllConditioning: the hook affects every entry; HookedOnly: only the entries it is attached to."""

    AllConditioning = "all_conditioning"
    HookedOnly = "hooked_only"


class _HookRef:
    """Shared by a hook and its clones: the identity under which its patches are registered."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:12]


def default_should_register(hook: Hook, model: Any, model_options: dict, target_dict: dict,
                            registered: HookGroup) -> bool:
    return True


def create_target_dict(target: EnumWeightTarget | None = None, **kwargs: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if target is not None:
        d["target"] = target
    d.update(kwargs)
    return d


class Hook:
    def __init__(self, hook_type: EnumHookType | None = None, hook_ref: _HookRef | None = None,
                 hook_id: str | None = None, hook_keyframe: HookKeyframeGroup | None = None,
                 hook_scope: EnumHookScope = EnumHookScope.AllConditioning) -> None:
        self.hook_type = hook_type
        self.hook_ref = hook_ref if hook_ref else _HookRef()
        self.hook_id = hook_id
        self.hook_keyframe = hook_keyframe if hook_keyframe else HookKeyframeGroup()
        self.hook_scope = hook_scope
        self.custom_should_register: Callable = default_should_register

    @property
    def strength(self) -> float:
        return self.hook_keyframe.strength

    def initialize_timesteps(self, model: Any) -> None:
        self.reset()
        self.hook_keyframe.initialize_timesteps(model)

    def reset(self) -> None:
        self.hook_keyframe.reset()

    def clone(self) -> Hook:
        c = self.__class__()
        c.hook_type = self.hook_type
        c.hook_ref = self.hook_ref
        c.hook_id = self.hook_id
        c.hook_keyframe = self.hook_keyframe
        c.hook_scope = self.hook_scope
        c.custom_should_register = self.custom_should_register
        return c

    def should_register(self, model: Any, model_options: dict, target_dict: dict, registered: HookGroup) -> bool:
        return self.custom_should_register(self, model, model_options, target_dict, registered)

    def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: HookGroup) -> bool:
        raise NotImplementedError("add_hook_patches should be defined for Hook subclasses")

    def __eq__(self, other: object) -> bool:
        return self.__class__ == other.__class__ and self.hook_ref == other.hook_ref

    def __hash__(self) -> int:
        return hash(self.hook_ref)


class WeightHook(Hook):
    """LoRA-style weight patches, used only for the entries carrying the hook (its scope is always HookedOnly)."""

    def __init__(self, strength_model: float = 1.0, strength_clip: float = 1.0) -> None:
        super().__init__(hook_type=EnumHookType.Weight, hook_scope=EnumHookScope.HookedOnly)
        self.weights: dict | None = None
        self.weights_clip: dict | None = None
        self.need_weight_init = True
        self._strength_model = strength_model
        self._strength_clip = strength_clip
        self.hook_scope = EnumHookScope.HookedOnly

    @property
    def strength_model(self) -> float:
        return self._strength_model * self.strength

    @property
    def strength_clip(self) -> float:
        return self._strength_clip * self.strength

    def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: HookGroup) -> bool:
        if not self.should_register(model, model_options, target_dict, registered):
            return False
        from .lora import load_lora, model_lora_keys_clip, model_lora_keys_unet

        clip_target = target_dict.get("target") == EnumWeightTarget.Clip
        strength = self._strength_clip if clip_target else self._strength_model
        if self.need_weight_init:
            key_map: dict[str, Any] = {}
            if clip_target:
                model_lora_keys_clip(model.model, key_map)
            else:
                model_lora_keys_unet(model.model, key_map)
            weights = load_lora(self.weights or {}, key_map, log_missing=False)
        else:
            weights = self.weights_clip if clip_target else self.weights
        model.add_hook_patches(hook=self, patches=weights or {}, strength_patch=strength)
        registered.add(self)
        return True

    def clone(self) -> WeightHook:
        c = super().clone()
        c.weights = self.weights
        c.weights_clip = self.weights_clip
        c.need_weight_init = self.need_weight_init
        c._strength_model = self._strength_model
        c._strength_clip = self._strength_clip
        return c


class ObjectPatchHook(Hook):
    def __init__(self, object_patches: dict | None = None,
                 hook_scope: EnumHookScope = EnumHookScope.AllConditioning) -> None:
        super().__init__(hook_type=EnumHookType.ObjectPatch)
        self.object_patches = object_patches
        self.hook_scope = hook_scope

    def clone(self) -> ObjectPatchHook:
        c = super().clone()
        c.object_patches = self.object_patches
        return c

    def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: HookGroup) -> bool:
        raise NotImplementedError("ObjectPatchHook is not supported (as in ComfyUI)")


class AdditionalModelsHook(Hook):
    """Models to keep loaded while sampling (its scope is always AllConditioning)."""

    def __init__(self, models: list | None = None, key: str | None = None) -> None:
        super().__init__(hook_type=EnumHookType.AdditionalModels)
        self.models = models
        self.key = key

    def clone(self) -> AdditionalModelsHook:
        c = super().clone()
        c.models = list(self.models) if self.models else self.models
        c.key = self.key
        return c

    def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: HookGroup) -> bool:
        if not self.should_register(model, model_options, target_dict, registered):
            return False
        registered.add(self)
        return True


class TransformerOptionsHook(Hook):
    """Wrappers, callbacks and patches merged into ``transformer_options`` (for all entries or the hooked ones)."""

    def __init__(self, transformers_dict: dict | None = None,
                 hook_scope: EnumHookScope = EnumHookScope.AllConditioning) -> None:
        super().__init__(hook_type=EnumHookType.TransformerOptions)
        self.transformers_dict = transformers_dict
        self.hook_scope = hook_scope
        self._skip_adding = False

    def clone(self) -> TransformerOptionsHook:
        c = super().clone()
        c.transformers_dict = self.transformers_dict
        c._skip_adding = self._skip_adding
        return c

    def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: HookGroup) -> bool:
        from .extension import merge_nested_dicts

        if not self.should_register(model, model_options, target_dict, registered):
            return False
        self._skip_adding = False
        if self.hook_scope == EnumHookScope.AllConditioning:
            add = {"transformer_options": self.transformers_dict, "to_load_options": self.transformers_dict}
            self._skip_adding = True  # already in every entry's options
        else:
            add = {"to_load_options": self.transformers_dict}
        registered.add(self)
        merge_nested_dicts(model_options, add, copy_dict1=False)
        return True

    def on_apply_hooks(self, model: Any, transformer_options: dict) -> None:
        from .extension import merge_nested_dicts

        if not self._skip_adding:
            merge_nested_dicts(transformer_options, self.transformers_dict, copy_dict1=False)


WrapperHook = TransformerOptionsHook


class InjectionsHook(Hook):
    def __init__(self, key: str | None = None, injections: list | None = None,
                 hook_scope: EnumHookScope = EnumHookScope.AllConditioning) -> None:
        super().__init__(hook_type=EnumHookType.Injections)
        self.key = key
        self.injections = injections
        self.hook_scope = hook_scope

    def clone(self) -> InjectionsHook:
        c = super().clone()
        c.key = self.key
        c.injections = list(self.injections) if self.injections else self.injections
        return c

    def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: HookGroup) -> bool:
        raise NotImplementedError("InjectionsHook is not supported (as in ComfyUI)")


class HookGroup:
    """A set of hooks (HOOKS sockets carry one); query by type, combine, clone, schedule."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self._hook_dict: dict[EnumHookType, list[Hook]] = {}

    def __len__(self) -> int:
        return len(self.hooks)

    def add(self, hook: Hook) -> None:
        if hook not in self.hooks:
            self.hooks.append(hook)
            self._hook_dict.setdefault(hook.hook_type, []).append(hook)

    def remove(self, hook: Hook) -> None:
        if hook in self.hooks:
            self.hooks.remove(hook)
            self._hook_dict[hook.hook_type].remove(hook)

    def get_type(self, hook_type: EnumHookType) -> list[Hook]:
        return self._hook_dict.get(hook_type, [])

    def contains(self, hook: Hook) -> bool:
        return hook in self.hooks

    def is_subset_of(self, other: HookGroup) -> bool:
        return set(self.hooks).issubset(set(other.hooks))

    def new_with_common_hooks(self, other: HookGroup) -> HookGroup:
        c = HookGroup()
        for hook in self.hooks:
            if other.contains(hook):
                c.add(hook.clone())
        return c

    def clone(self) -> HookGroup:
        c = HookGroup()
        for hook in self.hooks:
            c.add(hook.clone())
        return c

    def clone_and_combine(self, other: HookGroup | None) -> HookGroup:
        c = self.clone()
        if other is not None:
            for hook in other.hooks:
                c.add(hook.clone())
        return c

    def set_keyframes_on_hooks(self, hook_kf: HookKeyframeGroup | None) -> None:
        hook_kf = HookKeyframeGroup() if hook_kf is None else hook_kf.clone()
        for hook in self.hooks:
            hook.hook_keyframe = hook_kf

    def get_hooks_for_clip_schedule(self) -> list[tuple[tuple[float, float], list[tuple[WeightHook, Any]]]]:
        """The step ranges in which the weight hooks' keyframe strengths are constant, each with its keyframes."""
        scheduled: dict[Hook, list[tuple[tuple[float, float], HookKeyframe | None]]] = {}
        for hook in self.get_type(EnumHookType.Weight):
            schedule: list[tuple[tuple[float, float], HookKeyframe | None]] = []
            if len(hook.hook_keyframe.keyframes) == 0:
                scheduled[hook] = [((0.0, 1.0), None)]
                continue
            prev = hook.hook_keyframe.keyframes[0]
            for keyframe in hook.hook_keyframe.keyframes:
                if keyframe.start_percent > prev.start_percent and not math.isclose(keyframe.strength, prev.strength):
                    schedule.append(((prev.start_percent, keyframe.start_percent), prev))
                    prev = keyframe
                elif keyframe.start_percent == prev.start_percent:
                    prev = keyframe
            if not math.isclose(prev.start_percent, 1.0):
                schedule.append(((prev.start_percent, 1.0), prev))
            scheduled[hook] = schedule
        ranges = [t_range for entries in scheduled.values() for t_range, _ in entries]
        boundaries = sorted(set(itertools.chain.from_iterable(ranges)) | {0.0})
        real_ranges = [(boundaries[i], boundaries[i + 1]) for i in range(len(boundaries) - 1)]
        out = []
        for t_range in real_ranges:
            hooks_schedule = []
            for hook, entries in scheduled.items():
                keyframe = None
                for stored_range, stored_kf in entries:
                    if stored_range[0] < t_range[1] and stored_range[1] > t_range[0]:
                        keyframe = stored_kf
                        break
                hooks_schedule.append((hook, keyframe))
            out.append((t_range, hooks_schedule))
        return out

    def reset(self) -> None:
        for hook in self.hooks:
            hook.reset()

    @staticmethod
    def combine_all_hooks(hooks_list: list[HookGroup | None], require_count: int = 0) -> HookGroup | None:
        actual = [g for g in hooks_list if g is not None]
        if len(actual) < require_count:
            raise Exception(f"Need at least {require_count} hooks to combine, but only had {len(actual)}.")
        if not actual:
            return None
        if len(actual) == 1:
            return actual[0]
        final: HookGroup | None = None
        for group in actual:
            final = group.clone() if final is None else final.clone_and_combine(group)
        return final


class HookKeyframe:
    def __init__(self, strength: float, start_percent: float = 0.0, guarantee_steps: int = 1) -> None:
        self.strength = strength
        self.start_percent = float(start_percent)
        self.start_t = 999999999.9
        self.guarantee_steps = guarantee_steps

    def get_effective_guarantee_steps(self, max_sigma: torch.Tensor) -> int:
        """A keyframe that starts before the sampled range (img2img, split sampling) guarantees nothing."""
        if self.start_t > max_sigma:
            return 0
        return self.guarantee_steps

    def clone(self) -> HookKeyframe:
        c = HookKeyframe(strength=self.strength, start_percent=self.start_percent,
                         guarantee_steps=self.guarantee_steps)
        c.start_t = self.start_t
        return c


class HookKeyframeGroup:
    """Strengths over the sampling steps: the current keyframe changes when sampling passes its start."""

    def __init__(self) -> None:
        self.keyframes: list[HookKeyframe] = []
        self._current_keyframe: HookKeyframe | None = None
        self._current_used_steps = 0
        self._current_index = 0
        self._current_strength: float | None = None
        self._curr_t: Any = -1.0

    @property
    def strength(self) -> float:
        if self._current_keyframe is not None:
            return self._current_keyframe.strength
        return 1.0

    def reset(self) -> None:
        self._current_keyframe = None
        self._current_used_steps = 0
        self._current_index = 0
        self._current_strength = None
        self.curr_t = -1.0
        self._set_first_as_current()

    def add(self, keyframe: HookKeyframe) -> None:
        self.keyframes.append(keyframe)
        self.keyframes = get_sorted_list_via_attr(self.keyframes, "start_percent")
        self._set_first_as_current()

    def _set_first_as_current(self) -> None:
        self._current_keyframe = self.keyframes[0] if self.keyframes else None

    def has_guarantee_steps(self) -> bool:
        return any(kf.guarantee_steps > 0 for kf in self.keyframes)

    def has_index(self, index: int) -> bool:
        return 0 <= index < len(self.keyframes)

    def is_empty(self) -> bool:
        return len(self.keyframes) == 0

    def clone(self) -> HookKeyframeGroup:
        c = HookKeyframeGroup()
        for keyframe in self.keyframes:
            c.keyframes.append(keyframe.clone())
        c._set_first_as_current()
        return c

    def initialize_timesteps(self, model: Any) -> None:
        for keyframe in self.keyframes:
            keyframe.start_t = model.model_sampling.percent_to_sigma(keyframe.start_percent)

    def prepare_current_keyframe(self, curr_t: Any, transformer_options: dict[str, Any]) -> bool:
        """Advance to the keyframe for sigma ``curr_t``; True when the strength changed."""
        if self.is_empty():
            return False
        if curr_t == self._curr_t:
            return False
        max_sigma = torch.max(transformer_options["sample_sigmas"])
        prev_index = self._current_index
        prev_strength = self._current_strength
        if self._current_used_steps >= self._current_keyframe.get_effective_guarantee_steps(max_sigma):
            if self.has_index(self._current_index + 1):
                for i in range(self._current_index + 1, len(self.keyframes)):
                    candidate = self.keyframes[i]
                    if candidate.start_t >= curr_t:  # sigmas fall as sampling proceeds
                        self._current_index = i
                        self._current_strength = candidate.strength
                        self._current_keyframe = candidate
                        self._current_used_steps = 0
                        if self._current_keyframe.get_effective_guarantee_steps(max_sigma) > 0:
                            break
                    else:
                        break
        self._current_used_steps += 1
        self._curr_t = curr_t
        return prev_index != self._current_index and prev_strength != self._current_strength


class InterpolationMethod:
    LINEAR = "linear"
    EASE_IN = "ease_in"
    EASE_OUT = "ease_out"
    EASE_IN_OUT = "ease_in_out"

    _LIST = [LINEAR, EASE_IN, EASE_OUT, EASE_IN_OUT]

    @classmethod
    def get_weights(cls, num_from: float, num_to: float, length: int, method: str,
                    reverse: bool = False) -> torch.Tensor:
        diff = num_to - num_from
        if method == cls.LINEAR:
            weights = torch.linspace(num_from, num_to, length)
        elif method == cls.EASE_IN:
            index = torch.linspace(0, 1, length)
            weights = diff * torch.pow(index, 2) + num_from
        elif method == cls.EASE_OUT:
            index = torch.linspace(0, 1, length)
            weights = diff * (1 - torch.pow(1 - index, 2)) + num_from
        elif method == cls.EASE_IN_OUT:
            index = torch.linspace(0, 1, length)
            weights = diff * ((1 - torch.cos(index * math.pi)) / 2) + num_from
        else:
            raise ValueError(f"Unrecognized interpolation method '{method}'.")
        if reverse:
            weights = weights.flip(dims=(0,))
        return weights


def get_sorted_list_via_attr(objects: list, attr: str) -> list:
    """Stable sort by ``attr``: objects with equal values keep their relative order."""
    if not objects:
        return objects
    groups: dict[Any, list] = {}
    for o in objects:
        groups.setdefault(getattr(o, attr), []).append(o)
    return [o for _, group in sorted(groups.items()) for o in group]


def create_transformer_options_from_hooks(model: Any, hooks: HookGroup | None,
                                          transformer_options: dict | None = None) -> dict:
    if hooks is None or getattr(model, "is_clip", False):
        return {}
    transformer_options = {} if transformer_options is None else transformer_options
    for hook in hooks.get_type(EnumHookType.TransformerOptions):
        hook.on_apply_hooks(model, transformer_options)
    return transformer_options


def create_hook_lora(lora: dict[str, torch.Tensor], strength_model: float, strength_clip: float) -> HookGroup:
    group = HookGroup()
    hook = WeightHook(strength_model=strength_model, strength_clip=strength_clip)
    group.add(hook)
    hook.weights = lora
    return group


def create_hook_model_as_lora(weights_model: dict | None, weights_clip: dict | None, strength_model: float,
                              strength_clip: float) -> HookGroup:
    group = HookGroup()
    hook = WeightHook(strength_model=strength_model, strength_clip=strength_clip)
    group.add(hook)
    hook.weights = None if weights_model is None else {k: ("model_as_lora", (v,)) for k, v in weights_model.items()}
    hook.weights_clip = None if weights_clip is None else {k: ("model_as_lora", (v,)) for k, v in
                                                            weights_clip.items()}
    hook.need_weight_init = False
    return group


def get_patch_weights_from_model(model: Any, discard_model_sampling: bool = True) -> dict[str, torch.Tensor] | None:
    """A model's weights by model key (read from its file, unpatched: what a freshly loaded checkpoint has)."""
    if model is None:
        return None
    weights = model.model.base_state_dict()
    if discard_model_sampling:
        weights = {k: v for k, v in weights.items() if not k.startswith("model_sampling")}
    return weights


def load_hook_lora_for_models(model: Any, clip: Any, lora: dict[str, torch.Tensor], strength_model: float,
                              strength_clip: float) -> tuple[Any, Any, HookGroup]:
    """Register a LoRA as a weight hook directly on clones of a MODEL and CLIP."""
    from .lora import load_lora, model_lora_keys_clip, model_lora_keys_unet

    key_map: dict[str, Any] = {}
    if model is not None:
        model_lora_keys_unet(model.model, key_map)
    if clip is not None:
        model_lora_keys_clip(clip.cond_stage_model, key_map)
    group = HookGroup()
    hook = WeightHook()
    group.add(hook)
    loaded = load_lora(lora, key_map)
    new_model = new_clip = None
    applied: set = set()
    if model is not None:
        new_model = model.clone()
        applied |= set(new_model.add_hook_patches(hook=hook, patches=loaded, strength_patch=strength_model))
    if clip is not None:
        new_clip = clip.clone()
        applied |= set(new_clip.patcher.add_hook_patches(hook=hook, patches=loaded, strength_patch=strength_clip))
    for key in loaded:
        if key not in applied:
            log.warning("NOT LOADED %s", key)
    return new_model, new_clip, group


# --- conditioning helpers (what the hook nodes do) ---------------------------------------------


def conditioning_set_values(conditioning: list, values: dict[str, Any]) -> list:
    return [[t, {**opts, **values}] for t, opts in conditioning]


def _combine_hooks_from_values(c_dict: dict, values: dict, cache: dict) -> None:
    if "hooks" not in values:
        return
    if "hooks" not in c_dict:
        if values.get("hooks") is not None:
            c_dict["hooks"] = values["hooks"]
        return
    pair = (c_dict["hooks"], values["hooks"])
    key = (id(pair[0]), id(pair[1]))
    cached = cache.get(key)
    if cached is None:
        cached = cache[key] = pair[0].clone_and_combine(pair[1])
    c_dict["hooks"] = cached


def conditioning_set_values_with_hooks(conditioning: list, values: dict | None = None, append_hooks: bool = True,
                                       cache: dict | None = None) -> list:
    values = values or {}
    cache = {} if cache is None else cache
    out = []
    for tensor, options in conditioning:
        options = options.copy()
        for key, value in values.items():
            if append_hooks and key == "hooks":
                _combine_hooks_from_values(options, values, cache)
            else:
                options[key] = value
        out.append([tensor, options])
    return out


def set_hooks_for_conditioning(cond: list, hooks: HookGroup | None, append_hooks: bool = True,
                               cache: dict | None = None) -> list:
    if hooks is None:
        return cond
    return conditioning_set_values_with_hooks(cond, {"hooks": hooks}, append_hooks=append_hooks, cache=cache)


def set_timesteps_for_conditioning(cond: list, timestep_range: tuple[float, float] | None) -> list:
    if timestep_range is None:
        return cond
    return conditioning_set_values(cond, {"start_percent": timestep_range[0], "end_percent": timestep_range[1]})


def set_mask_for_conditioning(cond: list, mask: torch.Tensor | None, set_cond_area: str, strength: float) -> list:
    if mask is None:
        return cond
    if len(mask.shape) < 3:
        mask = mask.unsqueeze(0)
    return conditioning_set_values(cond, {"mask": mask, "set_area_to_bounds": set_cond_area != "default",
                                          "mask_strength": strength})


def combine_conditioning(conds: list) -> list:
    return [entry for cond in conds for entry in cond]


def combine_with_new_conds(conds: list, new_conds: list) -> list:
    return [combine_conditioning([c, new_c]) for c, new_c in zip(conds, new_conds, strict=False)]


def set_conds_props(conds: list, strength: float, set_cond_area: str, mask: torch.Tensor | None = None,
                    hooks: HookGroup | None = None, timesteps_range: tuple[float, float] | None = None,
                    append_hooks: bool = True) -> list:
    cache: dict = {}
    out = []
    for c in conds:
        c = set_hooks_for_conditioning(c, hooks, append_hooks=append_hooks, cache=cache)
        c = set_mask_for_conditioning(c, mask, set_cond_area, strength)
        out.append(set_timesteps_for_conditioning(c, timesteps_range))
    return out


def set_conds_props_and_combine(conds: list, new_conds: list, strength: float = 1.0, set_cond_area: str = "default",
                                mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                                timesteps_range: tuple[float, float] | None = None,
                                append_hooks: bool = True) -> list:
    cache: dict = {}
    out = []
    for c, new_c in zip(conds, new_conds, strict=False):
        new_c = set_hooks_for_conditioning(new_c, hooks, append_hooks=append_hooks, cache=cache)
        new_c = set_mask_for_conditioning(new_c, mask, set_cond_area, strength)
        new_c = set_timesteps_for_conditioning(new_c, timesteps_range)
        out.append(combine_conditioning([c, new_c]))
    return out


def set_default_conds_and_combine(conds: list, new_conds: list, hooks: HookGroup | None = None,
                                  timesteps_range: tuple[float, float] | None = None,
                                  append_hooks: bool = True) -> list:
    cache: dict = {}
    out = []
    for c, new_c in zip(conds, new_conds, strict=False):
        new_c = set_hooks_for_conditioning(new_c, hooks, append_hooks=append_hooks, cache=cache)
        new_c = conditioning_set_values(new_c, {"default": True})
        new_c = set_timesteps_for_conditioning(new_c, timesteps_range)
        out.append(combine_conditioning([c, new_c]))
    return out
