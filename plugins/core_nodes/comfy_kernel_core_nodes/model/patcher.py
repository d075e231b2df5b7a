"""MODEL (and the text encoder's and VAE's models): a model plus everything patched onto it.

A :class:`ModelPatcher` is what flows between nodes. It is cheap: the weights
are not in it but in the kernel's model manager (``comfy_kernel.gpu``), which
loads them on the worker's device when a node runs the model, keeps them while
memory allows and evicts them under pressure. What the patcher holds is the
recipe on top of those weights, with ComfyUI's API so that node packs work
unchanged:

* ``model_options``: sampler and ``transformer_options`` patches (attention
  patches and replacements, block patches, cfg functions, wrappers), read by
  the sampler and the diffusion model at their patch points;
* ``patches``: weight patches (``add_patches``: LoRA, model merging,
  differences), applied when the weights are loaded;
* ``object_patches``: attributes of the model replaced for this clone
  (``model_sampling`` by the ModelSampling* nodes, for instance).

``clone()`` copies the recipe and shares the model. Weight-patched clones are
separate entries in the model manager, keyed by the identities of their patch
batches, so a base model and its LoRA variant never overwrite each other and a
re-run of the same graph finds its patched weights already loaded. A node runs
the model inside ``with patcher.use() as model:``, which pins the weights and
yields the model with the object patches applied.

A patcher can also hold a plain ``torch.nn.Module`` (node packs wrap their own
networks: motion modules, adapters, detectors). Such a module is not in the
model manager: ``patch_model`` moves it to the device and applies the weight
patches in place, ``unpatch_model`` restores the saved weights, as in ComfyUI.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import extension

log = logging.getLogger(__name__)


# --- model_options helpers (ComfyUI's module-level functions) ----------------------------------


def copy_nested(value: Any) -> Any:
    """Copy dicts and lists recursively, keep everything else (tensors, functions) shared."""
    if isinstance(value, dict):
        return {k: copy_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_nested(v) for v in value]
    return value


def create_model_options_clone(orig_model_options: dict[str, Any]) -> dict[str, Any]:
    return copy_nested(orig_model_options)


def set_model_options_patch_replace(model_options: dict[str, Any], patch: Any, name: str, block_name: str,
                                    number: int, transformer_index: int | None = None) -> dict[str, Any]:
    # Copy on write down to the changed dict: callers pass shallow copies of the options a sampling run
    # uses (PAG, SLG), and the replacement must reach only their own evaluation.
    to = dict(model_options.get("transformer_options", {}))
    replace = dict(to.get("patches_replace", {}))
    replace[name] = dict(replace.get(name, {}))
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    replace[name][key] = patch
    to["patches_replace"] = replace
    model_options["transformer_options"] = to
    return model_options


def set_model_options_post_cfg_function(model_options: dict[str, Any], post_cfg_function: Callable,
                                        disable_cfg1_optimization: bool = False) -> dict[str, Any]:
    model_options["sampler_post_cfg_function"] = model_options.get("sampler_post_cfg_function", []) + [
        post_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def set_model_options_pre_cfg_function(model_options: dict[str, Any], pre_cfg_function: Callable,
                                       disable_cfg1_optimization: bool = False) -> dict[str, Any]:
    model_options["sampler_pre_cfg_function"] = model_options.get("sampler_pre_cfg_function", []) + [
        pre_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def _device(name: str | None) -> Any:
    import torch

    return torch.device(name) if name is not None else None


def _current_device() -> str:
    from comfy_kernel import gpu

    return gpu.current_device().torch_device


def patch_identity(patches: Any) -> str:
    """A stable identity for a batch of weight patches.

    Patches built from files (LoRA loaders) carry ``identity`` (file, stamp,
    names), so the same LoRA at the same strength maps to the same loaded
    model across prompts; any other batch is unique to the object.
    """
    identity = getattr(patches, "identity", None)
    return str(identity) if identity is not None else f"obj{uuid.uuid4().hex}"


class KeyedPatches(dict):
    """A ``{key: patch}`` dict that says where it came from (see :func:`patch_identity`)."""

    def __init__(self, data: dict[str, Any], identity: str) -> None:
        super().__init__(data)
        self.identity = identity


class ModelPatcher:
    """A model with its options and pending patches; see the module docstring."""

    def __init__(self, model: Any, load_device: Any = None, offload_device: Any = None, size: int = 0,
                 weight_inplace_update: bool = False) -> None:
        self.model = model
        self.load_device = load_device if load_device is not None else _device(_current_device())
        self.offload_device = offload_device if offload_device is not None else _device("cpu")
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        self.patches: dict[str, list[tuple]] = {}
        self.patch_batches: tuple[str, ...] = ()
        self.object_patches: dict[str, Any] = {}
        self.object_patches_backup: dict[str, Any] = {}
        self.weight_wrapper_patches: dict[str, list[Callable]] = {}
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.patches_uuid = uuid.uuid4()
        self.backup: dict[str, Any] = {}
        self.parent: ModelPatcher | None = None
        self.attachments: dict[str, Any] = {}
        self.additional_models: dict[str, list[ModelPatcher]] = {}
        self.callbacks: dict[str, dict[str, list[Callable]]] = extension.CallbacksMP.init_callbacks()
        self.wrappers: dict[str, dict[str, list[Callable]]] = extension.WrappersMP.init_wrappers()
        self.injections: dict[str, list[Any]] = {}
        self.hook_mode = None
        self.hook_patches: dict[Any, dict[str, list[tuple]]] = {}
        self.hook_patches_backup: dict[Any, dict[str, list[tuple]]] | None = None
        self.current_hooks = None
        self.forced_hooks = None
        self.is_clip = False
        self.force_cast_weights = False
        self.is_injected = False
        self.skip_injection = False

    # -- identity and copies --------------------------------------------------------------------

    def clone(self) -> ModelPatcher:
        n = self.__class__.__new__(self.__class__)
        n.__dict__.update(self.__dict__)
        n.patches = {k: list(v) for k, v in self.patches.items()}
        n.object_patches = dict(self.object_patches)
        n.object_patches_backup = {}
        n.weight_wrapper_patches = {k: list(v) for k, v in self.weight_wrapper_patches.items()}
        n.model_options = copy_nested(self.model_options)
        n.backup = {}
        n.parent = self
        n.attachments = {k: (v.on_model_patcher_clone() if hasattr(v, "on_model_patcher_clone") else v)
                         for k, v in self.attachments.items()}
        n.additional_models = {k: [m.clone() for m in v] for k, v in self.additional_models.items()}
        n.callbacks = copy_nested(self.callbacks)
        n.wrappers = copy_nested(self.wrappers)
        n.injections = {k: list(v) for k, v in self.injections.items()}
        n.hook_patches = {ref: {k: list(v) for k, v in p.items()} for ref, p in self.hook_patches.items()}
        n.hook_patches_backup = None
        n.current_hooks = None
        n.forced_hooks = self.forced_hooks.clone() if self.forced_hooks else self.forced_hooks
        for callback in self.get_all_callbacks(extension.CallbacksMP.ON_CLONE):
            callback(self, n)
        return n

    def __deepcopy__(self, memo: dict[int, Any]) -> ModelPatcher:
        """A clone running its own copy of the (patched) network, outside the model manager.

        ComfyUI deep-copies the whole model; packs do so to change layers of the
        copy only (comfy_mtb's seamless tiling). The copy's weight patches are
        baked into its network; weight patches added to it later are not applied.
        """
        if self.is_plain_module():
            n = self.clone()
            n.model = copy.deepcopy(self.model, memo)
            return n
        n = self.clone()
        network = self.patch_model(self.load_device)._module
        model = copy.copy(self.model)
        model._module = copy.deepcopy(network, memo)
        model.owns_network = True
        n.model = model
        n.patches, n.patch_batches, n.parent = {}, (), None
        memo[id(self)] = n
        return n

    def is_clone(self, other: Any) -> bool:
        return getattr(other, "model", None) is self.model

    def clone_has_same_weights(self, clone: ModelPatcher) -> bool:
        return self.is_clone(clone) and self.patch_batches == clone.patch_batches \
            and self.object_patches.get("manual_cast_dtype") == clone.object_patches.get("manual_cast_dtype")

    # -- sizes and devices ----------------------------------------------------------------------

    def is_plain_module(self) -> bool:
        """True for a bare ``torch.nn.Module`` a pack wrapped (no lazily loaded weights source)."""
        return not hasattr(self.model, "weights") and hasattr(self.model, "state_dict")

    def model_size(self) -> int:
        if not self.size and self.is_plain_module():
            self.size = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        if not self.size:
            size = getattr(getattr(self.model, "weights", None), "size", None)
            self.size = int(size or 0)
        return self.size

    def loaded_size(self) -> int:
        if self.is_plain_module():
            return self.model_size()
        handle = self._handle(register=False)
        return self.model_size() if handle is not None and handle.loaded else 0

    def current_loaded_device(self) -> Any:
        if self.is_plain_module():
            first = next(iter(self.model.parameters()), None)
            return first.device if first is not None else self.offload_device
        handle = self._handle(register=False)
        if handle is None or not handle.loaded:
            return self.offload_device
        return _device(handle.device) if handle.state == "device" else self.offload_device

    def model_dtype(self) -> Any:
        get_dtype = getattr(self.model, "get_dtype", None)
        return get_dtype() if callable(get_dtype) else None

    def memory_required(self, input_shape: Any) -> int:
        return self.model.memory_required(input_shape=input_shape)

    # -- model_options setters ------------------------------------------------------------------

    def set_model_sampler_cfg_function(self, sampler_cfg_function: Callable,
                                       disable_cfg1_optimization: bool = False) -> None:
        if len(inspect.signature(sampler_cfg_function).parameters) == 3:
            # the old (cond, uncond, cond_scale) signature
            old = sampler_cfg_function
            self.model_options["sampler_cfg_function"] = lambda args: old(args["cond"], args["uncond"],
                                                                          args["cond_scale"])
        else:
            self.model_options["sampler_cfg_function"] = sampler_cfg_function
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, post_cfg_function: Callable,
                                            disable_cfg1_optimization: bool = False) -> None:
        set_model_options_post_cfg_function(self.model_options, post_cfg_function, disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, pre_cfg_function: Callable,
                                           disable_cfg1_optimization: bool = False) -> None:
        set_model_options_pre_cfg_function(self.model_options, pre_cfg_function, disable_cfg1_optimization)

    def set_model_sampler_calc_cond_batch_function(self, fn: Callable) -> None:
        self.model_options["sampler_calc_cond_batch_function"] = fn

    def set_model_unet_function_wrapper(self, unet_wrapper_function: Callable) -> None:
        self.model_options["model_function_wrapper"] = unet_wrapper_function

    def set_model_denoise_mask_function(self, denoise_mask_function: Callable) -> None:
        self.model_options["denoise_mask_function"] = denoise_mask_function

    def set_model_rope_options(self, scale_x: float, shift_x: float, scale_y: float, shift_y: float,
                               scale_t: float, shift_t: float, **kwargs: Any) -> None:
        """Rotary position scaling: axis position i becomes shift + i * scale (``rope_options``, read by the DiTs)."""
        to = self.model_options["transformer_options"]
        to["rope_options"] = {**to.get("rope_options", {}), "scale_x": scale_x, "shift_x": shift_x,
                              "scale_y": scale_y, "shift_y": shift_y, "scale_t": scale_t, "shift_t": shift_t,
                              **kwargs}

    def set_model_patch(self, patch: Any, name: str) -> None:
        to = self.model_options["transformer_options"]
        to.setdefault("patches", {})
        to["patches"][name] = to["patches"].get(name, []) + [patch]

    def set_model_patch_replace(self, patch: Any, name: str, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        set_model_options_patch_replace(self.model_options, patch, name, block_name, number, transformer_index)

    def set_model_attn1_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_replace(self, patch: Any, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch: Any, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_input_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "input_block_patch")

    def set_model_input_block_patch_after_skip(self, patch: Any) -> None:
        self.set_model_patch(patch, "input_block_patch_after_skip")

    def set_model_output_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "output_block_patch")

    def set_model_middle_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "middle_block_patch")

    def set_model_emb_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "emb_patch")

    def set_model_forward_timestep_embed_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "forward_timestep_embed_patch")

    def set_model_double_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "double_block")

    def set_model_post_input_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "post_input")

    def set_model_noise_refiner_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "noise_refiner")

    # -- object patches -------------------------------------------------------------------------

    def add_object_patch(self, name: str, obj: Any) -> None:
        self.object_patches[name] = obj

    def set_model_compute_dtype(self, dtype: Any) -> None:
        self.add_object_patch("manual_cast_dtype", dtype)
        if dtype is not None:
            self.force_cast_weights = True

    def get_model_object(self, name: str) -> Any:
        if name in self.object_patches:
            return self.object_patches[name]
        target = self.model
        for part in name.split("."):
            target = getattr(target, part)
        return target

    def add_weight_wrapper(self, name: str, function: Callable) -> None:
        self.weight_wrapper_patches[name] = self.weight_wrapper_patches.get(name, []) + [function]
        self.patch_batches = self.patch_batches + (f"wrap{uuid.uuid4().hex}",)
        self.patches_uuid = uuid.uuid4()

    # -- weight patches -------------------------------------------------------------------------

    def add_patches(self, patches: dict[Any, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[Any]:
        """Queue weight patches by model key; returns the keys this model has (others are ignored)."""
        known = set(self.model.state_dict()) if self.is_plain_module() else self.model.state_dict_keys()
        added = []
        for k, value in patches.items():
            key, offset, function = (k, None, None) if isinstance(k, str) else (
                k[0], k[1], k[2] if len(k) > 2 else None)
            if key in known:
                self.patches.setdefault(key, []).append((strength_patch, value, strength_model, offset, function))
                added.append(k)
        if added:
            self.patch_batches = self.patch_batches + (
                f"{patch_identity(patches)}*{strength_patch!r}*{strength_model!r}",)
        self.patches_uuid = uuid.uuid4()
        return added

    def model_state_dict(self, filter_prefix: str | None = None) -> dict[str, Any]:
        """The current (patched) weights by model key; loads the model."""
        if self.is_plain_module():
            sd = self.model.state_dict()
        else:
            with self.use() as model:
                sd = model.state_dict()
        if filter_prefix is not None:
            sd = {k: v for k, v in sd.items() if k.startswith(filter_prefix)}
        return sd

    def get_key_patches(self, filter_prefix: str | None = None) -> dict[str, list]:
        """Every weight as a patch chain ``[(weight, convert), *pending patches]`` (for model merging)."""
        base = self.model.base_state_dict(filter_prefix)
        identity = lambda a, **kwargs: a  # noqa: E731
        return {k: [(w, identity)] + self.patches.get(k, []) for k, w in base.items()}

    def calculate_weight(self, patches: list[tuple], weight: Any, key: str, intermediate_dtype: Any = None) -> Any:
        from .weights import calculate_weight

        return calculate_weight(patches, weight, key, intermediate_dtype=intermediate_dtype)

    # -- loading --------------------------------------------------------------------------------

    def weights_key(self) -> str:
        """The model manager key of this clone's weights: the source plus its patch batches."""
        key = self.model.weights.key
        if self.patch_batches:
            key += "+" + "+".join(self.patch_batches)
        dtype = self.object_patches.get("manual_cast_dtype")
        if dtype is not None:
            key += f"@compute={dtype}"
        return key

    def _handle(self, register: bool = True, hooks: Any = None) -> Any:
        from comfy_kernel import gpu

        manager = gpu.model_manager()
        hook_patches = self.get_combined_hook_patches(hooks) if hooks is not None else {}
        key = self.weights_key() + self._hooks_key(hooks, hook_patches)
        if not register:
            device = _current_device()
            return next((h for h in manager.handles() if h.key == key and h.device == device), None)
        weights = self.model.weights
        patches = {k: list(v) for k, v in self.patches.items()}
        for k, plist in hook_patches.items():
            patches[k] = patches.get(k, []) + list(plist)
        wrappers = {k: list(v) for k, v in self.weight_wrapper_patches.items()}
        prefix = self.model.key_prefix
        compute_dtype = self.object_patches.get("manual_cast_dtype")

        def load(device: str) -> Any:
            sd = weights.read(device)
            if patches or wrappers:
                from .weights import patch_state_dict

                patch_state_dict(sd, patches, prefix, wrappers)
            if compute_dtype is not None:  # ModelComputeDtype: this entry holds the weights in that dtype
                sd = {k: v.to(compute_dtype) if v.is_floating_point() else v for k, v in sd.items()}
            return weights.build(sd)

        return manager.register(key, load, size=weights.size)

    def _hooks_key(self, hooks: Any, hook_patches: dict) -> str:
        """The part of the manager key that says which hook weights (at which strengths) are applied."""
        if not hook_patches:
            return ""
        parts = [f"{h.hook_ref.id if hasattr(h.hook_ref, 'id') else id(h.hook_ref)}*{h.strength!r}"
                 for h in hooks.hooks if h.hook_ref in self.hook_patches]
        return "+hooks:" + ",".join(parts)

    @contextmanager
    def use(self) -> Iterator[Any]:
        """The model, loaded and pinned on the worker's device, with this clone's object patches."""
        with self.use_hooks(None) as model:
            yield model

    @contextmanager
    def use_hooks(self, hooks: Any) -> Iterator[Any]:
        """Like :meth:`use`, with the weight patches of ``hooks`` (a HookGroup) at their current strengths.

        The hooked weights are their own manager entry; with no weight hook
        registered here this is the plain model.
        """
        from comfy_kernel import gpu

        if self.is_plain_module():
            yield self.patch_model(self.load_device)
            return
        if self.model.owns_network:
            module = self.model._module.to(self.load_device)
            with self._injected(module), self.model.bound(module, self.object_patches) as model:
                yield model
            return
        with gpu.model_manager().use(self._handle(hooks=hooks)) as module:
            for callback in self.get_all_callbacks(extension.CallbacksMP.ON_LOAD):
                callback(self, self.load_device, 0, False, True)
            with self._injected(module), self.model.bound(module, self.object_patches) as model:
                yield model

    @contextmanager
    def _injected(self, module: Any) -> Iterator[None]:
        """Run the clone's injections (``set_injections``) on the loaded network, and eject them after.

        Packs insert their own layers this way (motion modules, for instance);
        while an injection runs, ``self.model.diffusion_model`` is the network
        being used, and the pinned network is left as it was afterwards.
        """
        injections = [i for group in self.injections.values() for i in group]
        if not injections or self.skip_injection:
            yield
            return
        saved = self.model._module
        self.model._module = module
        try:
            for injection in injections:
                injection.inject(self)
            self.is_injected = True
        finally:
            self.model._module = saved
        try:
            yield
        finally:
            self.model._module = module
            try:
                for injection in injections:
                    injection.eject(self)
            finally:
                self.model._module = saved
                self.is_injected = False

    def patch_model(self, device_to: Any = None, lowvram_model_memory: int = 0, load_weights: bool = True,
                    force_patch_weights: bool = False) -> Any:
        """Load the patched weights (for packs that drive a model themselves); returns the model."""
        from comfy_kernel import gpu

        if self.is_plain_module():
            return self._patch_plain(device_to)
        if self.model.owns_network:
            return self.model.bind(self.model._module.to(device_to or self.load_device), self.object_patches)
        module = gpu.model_manager().load(self._handle())
        return self.model.bind(module, self.object_patches)

    def unpatch_model(self, device_to: Any = None, unpatch_weights: bool = True) -> None:
        """Restore a plain module's saved weights; managed weights need nothing (patched copies are separate)."""
        if not self.is_plain_module():
            return
        import torch

        with torch.no_grad():
            for key, weight in self.backup.items():
                _get_attr(self.model, key).copy_(weight)
        self.backup = {}
        for name, obj in self.object_patches_backup.items():
            _set_attr(self.model, name, obj)
        self.object_patches_backup = {}
        if device_to is not None:
            self.model.to(device_to)

    def _patch_plain(self, device_to: Any) -> Any:
        """Move a plain module to ``device_to`` and apply the pending weight and object patches in place."""
        import torch

        from .weights import calculate_weight

        if device_to is not None:
            self.model.to(device_to)
        sd = self.model.state_dict()
        with torch.no_grad():
            for key, plist in self.patches.items():
                if key not in sd or key in self.backup:
                    continue
                weight = sd[key]
                self.backup[key] = weight.detach().clone()
                patched = calculate_weight(plist, weight.to(torch.float32, copy=True), key, torch.float32)
                weight.copy_(patched.to(weight.dtype))
        for name, obj in self.object_patches.items():
            if name not in self.object_patches_backup:
                self.object_patches_backup[name] = _get_attr(self.model, name)
            _set_attr(self.model, name, obj)
        return self.model

    def detach(self, unpatch_all: bool = True) -> ModelPatcher:
        return self

    def partially_load(self, device_to: Any, extra_memory: int = 0, force_patch_weights: bool = False) -> int:
        self.patch_model(device_to)
        return 0

    def partially_unload(self, device_to: Any, memory_to_free: int = 0) -> int:
        return 0

    def model_patches_to(self, device: Any) -> None:
        to = self.model_options["transformer_options"]
        for patch_list in to.get("patches", {}).values():
            for i, patch in enumerate(patch_list):
                if hasattr(patch, "to"):
                    patch_list[i] = patch.to(device)
        for patch_dict in to.get("patches_replace", {}).values():
            for k, patch in patch_dict.items():
                if hasattr(patch, "to"):
                    patch_dict[k] = patch.to(device)
        wrapper = self.model_options.get("model_function_wrapper")
        if hasattr(wrapper, "to"):
            self.model_options["model_function_wrapper"] = wrapper.to(device)

    def model_patches_models(self) -> list[ModelPatcher]:
        to = self.model_options["transformer_options"]
        found: list[ModelPatcher] = []
        for patch_list in to.get("patches", {}).values():
            found += [m for p in patch_list if hasattr(p, "models") for m in p.models()]
        for patch_dict in to.get("patches_replace", {}).values():
            found += [m for p in patch_dict.values() if hasattr(p, "models") for m in p.models()]
        wrapper = self.model_options.get("model_function_wrapper")
        if hasattr(wrapper, "models"):
            found += wrapper.models()
        return found

    # -- lifecycle hooks used around sampling ---------------------------------------------------

    def pre_run(self) -> None:
        for callback in self.get_all_callbacks(extension.CallbacksMP.ON_PRE_RUN):
            callback(self)

    def prepare_state(self, timestep: Any) -> None:
        for callback in self.get_all_callbacks(extension.CallbacksMP.ON_PREPARE_STATE):
            callback(self, timestep)

    def cleanup(self) -> None:
        for callback in self.get_all_callbacks(extension.CallbacksMP.ON_CLEANUP):
            callback(self)

    def restore_hook_patches(self) -> None:
        if self.hook_patches_backup is not None:
            self.hook_patches = self.hook_patches_backup
            self.hook_patches_backup = None

    def set_hook_mode(self, hook_mode: Any) -> None:
        self.hook_mode = hook_mode

    def prepare_hook_patches_current_keyframe(self, t: Any, hook_group: Any, model_options: dict) -> None:
        """Move each hook of the group to its keyframe for sigma ``t[0]`` (the strengths pick the weights)."""
        transformer_options = model_options.get("transformer_options", {})
        for hook in hook_group.hooks:
            hook.hook_keyframe.prepare_current_keyframe(curr_t=t[0], transformer_options=transformer_options)

    def register_all_hook_patches(self, hooks: Any, target_dict: dict, model_options: dict | None = None,
                                  registered: Any = None) -> Any:
        """Register the weight hooks of ``hooks`` not yet known here; returns the registered group."""
        from . import hooks as H

        self.restore_hook_patches()
        registered = H.HookGroup() if registered is None else registered
        to_register = []
        for hook in hooks.get_type(H.EnumHookType.Weight):
            if hook.hook_ref not in self.hook_patches:
                to_register.append(hook)
            else:
                registered.add(hook)
        if to_register:
            self.hook_patches_backup = {ref: {k: list(v) for k, v in p.items()} for ref, p in
                                        self.hook_patches.items()}
            for hook in to_register:
                hook.add_hook_patches(self, model_options, target_dict, registered)
        for callback in self.get_all_callbacks(extension.CallbacksMP.ON_REGISTER_ALL_HOOK_PATCHES):
            callback(self, hooks, target_dict, model_options, registered)
        return registered

    def add_hook_patches(self, hook: Any, patches: dict, strength_patch: float = 1.0,
                         strength_model: float = 1.0) -> list[Any]:
        """Like :meth:`add_patches`, kept under the hook's reference; used only while the hook applies."""
        known = self.model.state_dict_keys()
        current = self.hook_patches.get(hook.hook_ref, {})
        added = []
        for k, value in patches.items():
            key, offset, function = (k, None, None) if isinstance(k, str) else (
                k[0], k[1], k[2] if len(k) > 2 else None)
            if key in known:
                current.setdefault(key, []).append((strength_patch, value, strength_model, offset, function))
                added.append(k)
        self.hook_patches[hook.hook_ref] = current
        self.patches_uuid = uuid.uuid4()
        return added

    def get_combined_hook_patches(self, hooks: Any) -> dict[str, list[tuple]]:
        """The hooks' patches per key, each scaled by its hook's current keyframe strength."""
        combined: dict[str, list[tuple]] = {}
        if hooks is None:
            return combined
        for hook in hooks.hooks:
            for key, plist in self.hook_patches.get(hook.hook_ref, {}).items():
                target = combined.setdefault(key, [])
                if math.isclose(hook.strength, 1.0):
                    target.extend(plist)
                else:
                    target.extend((p[0] * hook.strength,) + tuple(p[1:]) for p in plist)
        return combined

    def apply_hooks(self, hooks: Any, transformer_options: dict | None = None, force_apply: bool = False) -> dict:
        """Make ``hooks`` the current group; returns the transformer options its hooks add."""
        from .hooks import create_transformer_options_from_hooks

        if self.current_hooks is not hooks or force_apply:
            self.current_hooks = hooks
            for callback in self.get_all_callbacks(extension.CallbacksMP.ON_APPLY_HOOKS):
                callback(self, hooks)
        return create_transformer_options_from_hooks(self, hooks, transformer_options)

    def patch_hooks(self, hooks: Any) -> None:
        self.current_hooks = hooks

    def unpatch_hooks(self, whitelist_keys_set: set[str] | None = None) -> None:
        self.current_hooks = None

    def clear_cached_hook_weights(self) -> None:
        self.current_hooks = None

    def clean_hooks(self) -> None:
        self.current_hooks = None

    @contextmanager
    def use_ejected(self, skip_and_inject_on_exit_only: bool = False) -> Iterator[ModelPatcher]:
        yield self

    # -- callbacks, wrappers, attachments, additional models ------------------------------------

    def add_callback(self, call_type: str, callback: Callable) -> None:
        self.add_callback_with_key(call_type, None, callback)

    def add_callback_with_key(self, call_type: str, key: str, callback: Callable) -> None:
        self.callbacks.setdefault(call_type, {}).setdefault(key, []).append(callback)

    def remove_callbacks_with_key(self, call_type: str, key: str) -> None:
        self.callbacks.get(call_type, {}).pop(key, None)

    def get_callbacks(self, call_type: str, key: str) -> list[Callable]:
        return self.callbacks.get(call_type, {}).get(key, [])

    def get_all_callbacks(self, call_type: str) -> list[Callable]:
        return [c for cs in self.callbacks.get(call_type, {}).values() for c in cs]

    def add_wrapper(self, wrapper_type: str, wrapper: Callable) -> None:
        self.add_wrapper_with_key(wrapper_type, None, wrapper)

    def add_wrapper_with_key(self, wrapper_type: str, key: str, wrapper: Callable) -> None:
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def remove_wrappers_with_key(self, wrapper_type: str, key: str) -> None:
        self.wrappers.get(wrapper_type, {}).pop(key, None)

    def get_wrappers(self, wrapper_type: str, key: str) -> list[Callable]:
        return self.wrappers.get(wrapper_type, {}).get(key, [])

    def get_all_wrappers(self, wrapper_type: str) -> list[Callable]:
        return [w for ws in self.wrappers.get(wrapper_type, {}).values() for w in ws]

    def set_attachments(self, key: str, attachment: Any) -> None:
        self.attachments[key] = attachment

    def remove_attachments(self, key: str) -> None:
        self.attachments.pop(key, None)

    def get_attachment(self, key: str) -> Any:
        return self.attachments.get(key)

    def set_injections(self, key: str, injections: list[Any]) -> None:
        self.injections[key] = injections

    def remove_injections(self, key: str) -> None:
        self.injections.pop(key, None)

    def get_injections(self, key: str) -> list[Any] | None:
        return self.injections.get(key)

    def set_additional_models(self, key: str, models: list[ModelPatcher]) -> None:
        self.additional_models[key] = models

    def remove_additional_models(self, key: str) -> None:
        self.additional_models.pop(key, None)

    def get_additional_models_with_key(self, key: str) -> list[ModelPatcher]:
        return self.additional_models.get(key, [])

    def get_additional_models(self) -> list[ModelPatcher]:
        return [m for ms in self.additional_models.values() for m in ms]

    def get_nested_additional_models(self) -> list[ModelPatcher]:
        seen: list[ModelPatcher] = []
        todo = self.get_additional_models()
        while todo:
            m = todo.pop(0)
            if any(m is s for s in seen):
                continue
            seen.append(m)
            todo += m.get_additional_models()
        return seen

    def __repr__(self) -> str:
        return f"<ModelPatcher {self.model.__class__.__name__} {self.weights_key()}>"


def _get_attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set_attr(obj: Any, path: str, value: Any) -> None:
    owner, _, attr = path.rpartition(".")
    setattr(_get_attr(obj, owner) if owner else obj, attr, value)
