"""The sampler's side of hooks (ComfyUI's hook handling in ``comfy.samplers`` and ``comfy.sampler_helpers``).

Before sampling, the hooks the conditioning carries (and the ControlNets'
``extra_hooks``) are registered on the MODEL (weight hooks become its hook
patches; transformer-options hooks go into the options), and each entry keeps
only the hooks that could be registered. At every evaluation the entries are
grouped by hook group: each group runs with its hooks' weights (a separate
model manager entry at the current keyframe strengths) and its transformer
options. Entries marked ``default`` fill only the area no other entry of
their side covers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..model import hooks as H


def preprocess_conds_hooks(conds: dict[str, list[dict[str, Any]]]) -> None:
    """Merge each ControlNet's extra hooks into the hooks of the entries using it."""
    replacements: dict[tuple[int, int], tuple[Any, Any, list[dict]]] = {}
    for entries in conds.values():
        for entry in entries:
            control = entry.get("control")
            if control is not None and control.get_extra_hooks():
                hooks = entry.get("hooks")
                replacements.setdefault((id(control), id(hooks)), (control, hooks, []))[2].append(entry)
    for control, hooks, entries in replacements.values():
        combined = H.HookGroup.combine_all_hooks(control.get_extra_hooks() + [hooks])
        if combined is not None:
            for entry in entries:
                entry["hooks"] = combined


def _hooks_of_conds(conds: dict[str, list[dict[str, Any]]]) -> H.HookGroup:
    found = H.HookGroup()
    for entries in conds.values():
        controls = []
        for entry in entries:
            if "hooks" in entry and entry["hooks"] is not None:
                for hook in entry["hooks"].hooks:
                    found.add(hook)
            if "control" in entry:
                controls.append(entry["control"])
        extra: list[Any] = []
        seen: list[Any] = []
        for control in controls:
            while control is not None and not any(control is s for s in seen):
                seen.append(control)
                if control.extra_hooks is not None:
                    extra.append(control.extra_hooks)
                control = control.previous_controlnet
        combined = H.HookGroup.combine_all_hooks(extra)
        if combined is not None:
            for hook in combined.hooks:
                found.add(hook)
    return found


def prepare_model_patcher(patcher: Any, conds: dict[str, list[dict[str, Any]]], model_options: dict) -> None:
    """Register the conditioning's hooks on ``patcher``; ``model_options["registered_hooks"]`` lists them."""
    hooks = _hooks_of_conds(conds)
    if len(hooks) == 0:
        return
    registered = H.HookGroup()
    target = H.create_target_dict(H.EnumWeightTarget.Model)
    for hook in hooks.get_type(H.EnumHookType.TransformerOptions):
        hook.add_hook_patches(patcher, model_options, target, registered)
    for hook in hooks.get_type(H.EnumHookType.AdditionalModels):
        hook.add_hook_patches(patcher, model_options, target, registered)
    patcher.register_all_hook_patches(hooks, target, model_options, registered)
    if len(registered) > 0:
        model_options["registered_hooks"] = registered


def filter_registered_hooks_on_conds(conds: dict[str, list[dict[str, Any]]], model_options: dict) -> None:
    """Keep on each entry only the hooks that were registered (entries sharing a group keep sharing one)."""
    registered = model_options.get("registered_hooks")
    if registered is None:
        for entries in conds.values():
            for entry in entries:
                entry.pop("hooks", None)
        return
    replaced: dict[int, Any] = {}
    for entries in conds.values():
        for entry in entries:
            hooks = entry.get("hooks")
            if hooks is None or hooks.is_subset_of(registered):
                continue
            if id(hooks) not in replaced:
                new = hooks.new_with_common_hooks(registered)
                replaced[id(hooks)] = new if len(new) > 0 else None
            entry["hooks"] = replaced[id(hooks)]


def additional_models(model_options: dict) -> list[Any]:
    registered = model_options.get("registered_hooks")
    if registered is None:
        return []
    return [m for hook in registered.get_type(H.EnumHookType.AdditionalModels) for m in (hook.models or [])]


def initialize_timesteps(model: Any, conds: dict[str, list[dict[str, Any]]]) -> None:
    for entries in conds.values():
        for entry in entries:
            if entry.get("hooks") is not None:
                for hook in entry["hooks"].hooks:
                    hook.initialize_timesteps(model)


def group_by_hooks(model: Any, conds: list, x_in: torch.Tensor, timestep: torch.Tensor, model_options: dict,
                   area_and_mult: Callable) -> dict[Any, list[tuple[Any, int]]]:
    """The active entries of each side as ``{hook group or None: [(run, side), ...]}``, defaults resolved."""
    patcher = getattr(model, "current_patcher", None)
    grouped: dict[Any, list[tuple[Any, int]]] = {}
    defaults: list[list[dict]] = []
    for side, entries in enumerate(conds):
        side_defaults = []
        for entry in entries or ():
            if "default" in entry:
                side_defaults.append(entry)
                continue
            run = area_and_mult(entry, x_in, timestep)
            if run is None:
                continue
            if run.hooks is not None and patcher is not None:
                patcher.prepare_hook_patches_current_keyframe(timestep, run.hooks, model_options)
            grouped.setdefault(run.hooks, []).append((run, side))
        defaults.append(side_defaults)
    if any(defaults):
        _add_default_conds(patcher, grouped, defaults, x_in, timestep, model_options, area_and_mult)
    return grouped


def _add_default_conds(patcher: Any, grouped: dict, defaults: list[list[dict]], x_in: torch.Tensor,
                       timestep: torch.Tensor, model_options: dict, area_and_mult: Callable) -> None:
    """Default entries weigh what is left of their side once every other entry's weight is taken off."""
    remaining = [torch.ones_like(x_in) for _ in defaults]
    for runs in grouped.values():
        for run, side in runs:
            if not defaults[side]:
                continue
            target = remaining[side]
            if run.area is not None:
                dims = len(run.area) // 2
                for i in range(dims):
                    target = target.narrow(i + 2, run.area[i + dims], run.area[i])
            target -= run.mult
    for side, mult in enumerate(remaining):
        if not defaults[side]:
            continue
        torch.nn.functional.relu(mult, inplace=True)
        if torch.max(mult) == 0.0:
            continue
        for entry in defaults[side]:
            run = area_and_mult(entry, x_in, timestep)
            if run is None:
                continue
            run = run._replace(mult=mult)
            if run.hooks is not None and patcher is not None:
                patcher.prepare_hook_patches_current_keyframe(timestep, run.hooks, model_options)
            grouped.setdefault(run.hooks, []).append((run, side))


@contextmanager
def hooked_model(model: Any, hooks: Any) -> Iterator[Any]:
    """``model`` running the weights of ``hooks`` (itself when the group has no weight hook registered)."""
    patcher = getattr(model, "current_patcher", None)
    if hooks is None or patcher is None or not any(h.hook_ref in patcher.hook_patches for h in hooks.hooks):
        yield model
        return
    with patcher.use_hooks(hooks) as hooked:
        hooked.current_patcher = patcher
        yield hooked


def transformer_options_for(model: Any, hooks: Any, model_options: dict) -> dict:
    """The group's transformer options: what its hooks add, then the model's own options merged in."""
    from ..model.extension import merge_nested_dicts

    patcher = getattr(model, "current_patcher", None)
    options = patcher.apply_hooks(hooks=hooks) if patcher is not None else {}
    return merge_nested_dicts(options, model_options.get("transformer_options", {}), copy_dict1=False)
