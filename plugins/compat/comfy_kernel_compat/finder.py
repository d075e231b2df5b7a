"""The import hook that makes ComfyUI's module names resolve to ``surface/``.

Why a meta-path finder: node packs import ``folder_paths`` or ``server`` as
top-level names. Installing packages with those names would shadow unrelated
libraries for every program using the environment; a finder placed first on
``sys.meta_path`` answers only for the listed names, only in a process that
imported this module (the kernel imports it from the ``comfy_kernel.preload``
entry-point group before any plugin or node pack loads).

Only top-level names are intercepted. Their modules are loaded from
``surface/`` with their ComfyUI names (``comfy``, not
``comfy_kernel_compat.surface.comfy``), so submodules such as ``comfy.utils``
are found by the ordinary machinery through the package's ``__path__``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType

SURFACE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "surface")

#: Top-level ComfyUI module names this layer provides.
NAMES = frozenset({
    "folder_paths", "nodes", "server", "comfy", "comfy_execution", "comfy_api", "comfy_extras",
    "latent_preview", "node_helpers", "execution", "protocol", "comfyui_version",
})


class ComfyUIFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`NAMES` in :data:`SURFACE_DIR`."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in NAMES:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [SURFACE_DIR])

    def __repr__(self) -> str:
        return "<comfy_kernel_compat.ComfyUIFinder>"


_FINDER = ComfyUIFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Remove the finder and forget the modules it provided (used by tests)."""
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in list(sys.modules):
        if name.split(".", 1)[0] in NAMES and _provided(sys.modules[name]):
            del sys.modules[name]


def _provided(module: ModuleType | None) -> bool:
    file = getattr(module, "__file__", None) or ""
    return os.path.abspath(file).startswith(SURFACE_DIR + os.sep)


install()
