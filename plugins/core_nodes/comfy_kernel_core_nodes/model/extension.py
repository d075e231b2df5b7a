"""Wrappers and callbacks that node packs attach to a model (ComfyUI's ``patcher_extension``).

A *wrapper* surrounds one stage of sampling (the outer sample call, the
sampler, noise prediction, conditioning batches, ``apply_model``, the
diffusion model's forward): it is called with an executor and the stage's
arguments and decides whether and how to call ``executor(*args)`` — the next
wrapper, or the stage itself. Wrappers live in
``model_options["transformer_options"]["wrappers"][stage][key] = [fn, ...]``
so they are cloned and merged like every other model option. *Callbacks* are
plain notifications kept on the patcher (``ON_CLONE``, ``ON_PRE_RUN`` ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class CallbacksMP:
    ON_CLONE = "on_clone"
    ON_LOAD = "on_load_after"
    ON_DETACH = "on_detach_after"
    ON_CLEANUP = "on_cleanup"
    ON_PRE_RUN = "on_pre_run"
    ON_PREPARE_STATE = "on_prepare_state"
    ON_APPLY_HOOKS = "on_apply_hooks"
    ON_REGISTER_ALL_HOOK_PATCHES = "on_register_all_hook_patches"
    ON_INJECT_MODEL = "on_inject_model"
    ON_EJECT_MODEL = "on_eject_model"

    @classmethod
    def init_callbacks(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"

    @classmethod
    def init_wrappers(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


def _container(transformer_options: dict[str, Any], is_model_options: bool, kind: str) -> dict[str, Any]:
    if is_model_options:
        transformer_options = transformer_options.setdefault("transformer_options", {})
    return transformer_options.setdefault(kind, {})


def add_wrapper_with_key(wrapper_type: str, key: str, wrapper: Callable, transformer_options: dict[str, Any],
                         is_model_options: bool = False) -> None:
    _container(transformer_options, is_model_options, "wrappers").setdefault(wrapper_type, {}) \
        .setdefault(key, []).append(wrapper)


def add_wrapper(wrapper_type: str, wrapper: Callable, transformer_options: dict[str, Any],
                is_model_options: bool = False) -> None:
    add_wrapper_with_key(wrapper_type, None, wrapper, transformer_options, is_model_options)


def add_callback_with_key(call_type: str, key: str, callback: Callable, transformer_options: dict[str, Any],
                          is_model_options: bool = False) -> None:
    _container(transformer_options, is_model_options, "callbacks").setdefault(call_type, {}) \
        .setdefault(key, []).append(callback)


def add_callback(call_type: str, callback: Callable, transformer_options: dict[str, Any],
                 is_model_options: bool = False) -> None:
    add_callback_with_key(call_type, None, callback, transformer_options, is_model_options)


def _collected(kind: str, name: str, options: dict[str, Any], is_model_options: bool) -> list[Callable]:
    if is_model_options:
        options = options.get("transformer_options", {})
    found: list[Callable] = []
    for fns in options.get(kind, {}).get(name, {}).values():
        found.extend(fns)
    return found


def get_all_wrappers(wrapper_type: str, transformer_options: dict[str, Any],
                     is_model_options: bool = False) -> list[Callable]:
    return _collected("wrappers", wrapper_type, transformer_options, is_model_options)


def get_all_callbacks(call_type: str, transformer_options: dict[str, Any],
                      is_model_options: bool = False) -> list[Callable]:
    return _collected("callbacks", call_type, transformer_options, is_model_options)


def merge_nested_dicts(dict1: dict, dict2: dict, copy_dict1: bool = True) -> dict:
    """dict1 with dict2's entries added; lists of callables are concatenated, dicts merged."""
    merged = dict(dict1) if copy_dict1 else dict1
    for key, value in dict2.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested_dicts(merged[key], value, copy_dict1)
        elif isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = merged[key] + value
        else:
            merged[key] = value
    return merged


class WrapperExecutor:
    """Calls the wrappers of one stage in order, the last of them around the stage itself."""

    def __init__(self, original: Callable, class_obj: Any, wrappers: list[Callable], idx: int) -> None:
        self.original = original
        self.class_obj = class_obj
        self.wrappers = list(wrappers)
        self.idx = idx
        self.is_last = idx == len(wrappers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The next wrapper (or the stage): what a wrapper calls to continue."""
        following = WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1)
        return following.execute(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)

    def _create_next_executor(self) -> WrapperExecutor:
        return WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1)

    @classmethod
    def new_executor(cls, original: Callable, wrappers: list[Callable], idx: int = 0) -> WrapperExecutor:
        return cls(original, None, wrappers, idx)

    @classmethod
    def new_class_executor(cls, original: Callable, class_obj: Any, wrappers: list[Callable],
                           idx: int = 0) -> WrapperExecutor:
        return cls(original, class_obj, wrappers, idx)
