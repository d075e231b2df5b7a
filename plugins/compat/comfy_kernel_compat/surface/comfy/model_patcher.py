"""ComfyUI's ``comfy.model_patcher``: a small ``ModelPatcher`` for packs that build or wrap models.

comfy-kernel's samplers take their models from the core_nodes plugin and do
not read a patcher's ``model_options``; this class exists so packs that
subclass, construct or ``clone()`` a ModelPatcher import and keep their
bookkeeping. Weight patches are stored, and applied only by
:meth:`ModelPatcher.patch_model` (added to the matching tensors).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any


def set_model_options_patch_replace(model_options: dict[str, Any], patch: Any, name: str, block_name: str,
                                    number: int, transformer_index: int | None = None) -> dict[str, Any]:
    to = model_options.setdefault("transformer_options", {})
    replace = to.setdefault("patches_replace", {}).setdefault(name, {})
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    replace[key] = patch
    return model_options


def set_model_options_post_cfg_function(model_options: dict[str, Any], post_cfg_function: Callable,
                                        disable_cfg1_optimization: bool = False) -> dict[str, Any]:
    model_options.setdefault("sampler_post_cfg_function", []).append(post_cfg_function)
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def set_model_options_pre_cfg_function(model_options: dict[str, Any], pre_cfg_function: Callable,
                                       disable_cfg1_optimization: bool = False) -> dict[str, Any]:
    model_options.setdefault("sampler_pre_cfg_function", []).append(pre_cfg_function)
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


class ModelPatcher:
    """A model plus its devices, options and pending weight patches."""

    def __init__(self, model: Any, load_device: Any, offload_device: Any, size: int = 0,
                 weight_inplace_update: bool = False):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        self.patches: dict[str, list[tuple]] = {}
        self.backup: dict[str, Any] = {}
        self.object_patches: dict[str, Any] = {}
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.patches_uuid = object()

    def model_size(self) -> int:
        if not self.size and hasattr(self.model, "parameters"):
            self.size = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return self.size

    def clone(self) -> ModelPatcher:
        other = copy.copy(self)
        other.patches = {k: list(v) for k, v in self.patches.items()}
        other.object_patches = dict(self.object_patches)
        other.model_options = copy.deepcopy(self.model_options)
        other.backup = {}
        return other

    def is_clone(self, other: Any) -> bool:
        return getattr(other, "model", None) is self.model

    def add_patches(self, patches: dict[str, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[str]:
        """Queue weight patches (``key → tensor``); returns the keys the model has."""
        keys = set(self.model.state_dict()) if hasattr(self.model, "state_dict") else set(patches)
        added = []
        for key, patch in patches.items():
            if key in keys:
                self.patches.setdefault(key, []).append((strength_patch, patch, strength_model))
                added.append(key)
        self.patches_uuid = object()
        return added

    def get_key_patches(self, filter_prefix: str | None = None) -> dict[str, list]:
        return {k: v for k, v in self.patches.items() if filter_prefix is None or k.startswith(filter_prefix)}

    def add_object_patch(self, name: str, obj: Any) -> None:
        self.object_patches[name] = obj

    def get_model_object(self, name: str) -> Any:
        if name in self.object_patches:
            return self.object_patches[name]
        target = self.model
        for part in name.split("."):
            target = getattr(target, part)
        return target

    # model_options setters packs call
    def set_model_unet_function_wrapper(self, unet_wrapper_function: Callable) -> None:
        self.model_options["model_function_wrapper"] = unet_wrapper_function

    def set_model_sampler_cfg_function(self, sampler_cfg_function: Callable,
                                       disable_cfg1_optimization: bool = False) -> None:
        self.model_options["sampler_cfg_function"] = sampler_cfg_function
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, post_cfg_function: Callable,
                                            disable_cfg1_optimization: bool = False) -> None:
        set_model_options_post_cfg_function(self.model_options, post_cfg_function, disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, pre_cfg_function: Callable,
                                           disable_cfg1_optimization: bool = False) -> None:
        set_model_options_pre_cfg_function(self.model_options, pre_cfg_function, disable_cfg1_optimization)

    def set_model_patch(self, patch: Any, name: str) -> None:
        self.model_options["transformer_options"].setdefault("patches", {}).setdefault(name, []).append(patch)

    def set_model_patch_replace(self, patch: Any, name: str, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        set_model_options_patch_replace(self.model_options, patch, name, block_name, number, transformer_index)

    def set_model_attn1_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn2_patch")

    def set_model_input_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "input_block_patch")

    def set_model_output_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "output_block_patch")

    # weights
    def patch_model(self, device_to: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Apply queued weight patches (simple additions) and move the model to ``device_to``."""
        if hasattr(self.model, "state_dict"):
            state = self.model.state_dict()
            for key, entries in self.patches.items():
                if key in state and key not in self.backup:
                    self.backup[key] = state[key].clone()
                for strength_patch, patch, strength_model in entries:
                    weight = state[key]
                    weight.mul_(strength_model).add_(patch.to(weight.device, weight.dtype), alpha=strength_patch)
        if device_to is not None and hasattr(self.model, "to"):
            self.model.to(device_to)
        return self.model

    def unpatch_model(self, device_to: Any = None, unpatch_weights: bool = True) -> None:
        if unpatch_weights and self.backup and hasattr(self.model, "state_dict"):
            state = self.model.state_dict()
            for key, value in self.backup.items():
                state[key].copy_(value)
            self.backup = {}
        if device_to is not None and hasattr(self.model, "to"):
            self.model.to(device_to)

    def model_dtype(self) -> Any:
        if hasattr(self.model, "parameters"):
            for p in self.model.parameters():
                return p.dtype
        return None
