"""ComfyUI's ``comfy`` package, mapped onto comfy-kernel.

The model and sampling modules (``comfy.samplers``, ``comfy.sd``,
``comfy.model_patcher`` ...) re-export core_nodes' objects; ``comfy.utils``,
``comfy.model_management`` and ``comfy.cli_args`` adapt the kernel's progress,
GPU scheduler and flags. ``import comfy`` followed by ``comfy.samplers.X``
works as in ComfyUI (where some other module always imported the submodule
first): a submodule read as an attribute is imported then.
"""

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'comfy' has no attribute {name!r}") from None
