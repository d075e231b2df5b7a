"""ComfyUI's ``comfy.sampler_helpers``: conditioning and mask helpers of core_nodes' guider.

``convert_cond``, ``prepare_mask`` are core_nodes' own; ``prepare_model_patcher``
merges the patcher's wrappers and callbacks into the run's options as the
core guider does, then registers conditioning hooks where core_nodes has them.
``get_models_from_cond``/``prepare_sampling``/``cleanup_models`` are adapters:
comfy-kernel loads the models a prompt needs through its model manager
(``ModelPatcher.use()``), so there is nothing to gather or free by hand.
"""

from typing import Any

from comfy_kernel_compat.reexport import reexport


def get_models_from_cond(cond: list[dict[str, Any]], model_type: str) -> list[Any]:
    """The objects of kind ``model_type`` (``"control"``, ``"gligen"`` ...) attached to ``cond``."""
    models: list[Any] = []
    for c in cond:
        if model_type in c:
            value = c[model_type]
            models += value.get_models() if hasattr(value, "get_models") else [value]
    return models


def get_additional_models(conds: dict[str, Any], dtype: Any) -> tuple[list[Any], int]:
    models: list[Any] = []
    for cond in conds.values():
        models += get_models_from_cond(cond, "control") + get_models_from_cond(cond, "gligen")
    return models, 0


def cleanup_additional_models(models: Any) -> None:
    """Nothing to do: the model manager owns loaded weights."""


def cleanup_models(conds: Any, models: Any) -> None:
    """Nothing to do: the model manager owns loaded weights."""


def prepare_model_patcher(model: Any, conds: Any, model_options: dict[str, Any]) -> None:
    import importlib

    from comfy_kernel_core_nodes.model import extension

    to = model_options.setdefault("transformer_options", {})
    extension.merge_nested_dicts(to.setdefault("wrappers", {}), model.wrappers, copy_dict1=False)
    extension.merge_nested_dicts(to.setdefault("callbacks", {}), model.callbacks, copy_dict1=False)
    try:
        hooks = importlib.import_module("comfy_kernel_core_nodes.sampling.hooks")
    except ModuleNotFoundError:
        return
    hooks.prepare_model_patcher(model, conds, model_options)


def prepare_sampling(model: Any, noise_shape: Any, conds: Any, model_options: Any = None) -> tuple[Any, Any, list]:
    """``(inner model, conds, models)``; loading happens when the guider runs the model."""
    return model.model, conds, []


reexport(globals(), ["sampling.guider"])
