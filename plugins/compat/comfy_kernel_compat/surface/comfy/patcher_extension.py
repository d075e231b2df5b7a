"""ComfyUI's ``comfy.patcher_extension``: wrapper and callback registration (WrappersMP, CallbacksMP).

``PatcherInjection`` and ``copy_nested_dicts`` are ComfyUI's small helpers
for packs that keep injections on a ModelPatcher (``set_injections``); the
patcher runs them on the network while it is in use (AnimateDiff inserts its
motion modules this way) and ejects them afterwards.
"""

from collections.abc import Callable
from typing import Any

from comfy_kernel_compat.reexport import reexport


class PatcherInjection:
    """A pair of functions inserting something into a patcher's model and taking it out again."""

    def __init__(self, inject: Callable[..., Any], eject: Callable[..., Any]):
        self.inject = inject
        self.eject = eject


def copy_nested_dicts(input_dict: dict) -> dict:
    """A copy of nested dicts (lists copied too, their items shared)."""
    out = dict(input_dict)
    for key, value in input_dict.items():
        if isinstance(value, dict):
            out[key] = copy_nested_dicts(value)
        elif isinstance(value, list):
            out[key] = list(value)
    return out


reexport(globals(), ["model.extension"])
