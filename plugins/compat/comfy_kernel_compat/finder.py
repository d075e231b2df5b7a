"""The import hook that makes ComfyUI's module names resolve to ``surface/``.

Why a meta-path finder: node packs import ``folder_paths`` or ``server`` as
top-level names. Installing packages with those names would shadow unrelated
libraries for every program using the environment; a finder placed first on
``sys.meta_path`` answers only for the listed names, only in a process that
imported this module (the kernel imports it from the ``comfy_kernel.preload``
entry-point group before any plugin or node pack loads).

Only top-level names are intercepted, plus ``comfy_extras.*`` submodules,
which are built from the core nodes that declare them (see :mod:`.extras`). Their modules are loaded from
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

from comfy_kernel.plugins import note_missing

SURFACE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "surface")

#: Top-level ComfyUI module names this layer provides.
NAMES = frozenset({
    "folder_paths", "nodes", "server", "comfy", "comfy_execution", "comfy_api", "comfy_extras",
    "latent_preview", "node_helpers", "execution", "protocol", "comfyui_version",
})

LTX = "the LTX-Video (Lightricks) model family is not implemented"

#: ComfyUI modules (and everything under them) of features comfy-kernel does not implement, with the reason
#: their import fails with.
UNAVAILABLE = {
    "comfy.ldm.lightricks": LTX,
    "comfy_extras.nodes_lt": LTX,
    "comfy_extras.nodes_lt_audio": LTX,
    "comfy.ldm.minimax": "the MiniMax model family is not implemented",
    "comfy.taesd.taehv": "the temporal tiny autoencoder (TAEHV) is not implemented",
    "comfy.context_windows": "context windows (sampling long videos in overlapping windows) are not implemented",
    "comfy.quant_ops": "quantized weights are core_nodes' own (fp8 and scaled fp8 layers), without ComfyUI's "
                       "QuantizedTensor layouts",
}


def unavailable(fullname: str) -> str | None:
    """Why ``fullname`` is one of the :data:`UNAVAILABLE` modules, or None."""
    for prefix, why in UNAVAILABLE.items():
        if fullname == prefix or fullname.startswith(prefix + "."):
            return why
    return None


class _Unavailable(importlib.abc.Loader):
    """Fails the import with :class:`~.reexport.MissingFeature` naming the module a pack asked for."""

    def __init__(self, why: str) -> None:
        self.why = why

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        from .reexport import MissingFeature

        raise MissingFeature(f"{module.__name__} is not available on comfy-kernel: {self.why}",
                             name=module.__name__)


class ComfyUIFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`NAMES` in :data:`SURFACE_DIR`.

    A submodule that does not exist is noted for the node pack being imported
    (``missing`` in its record), so what a pack went without stays visible
    when the pack catches the ImportError itself.
    """

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in NAMES:
            return importlib.machinery.PathFinder.find_spec(fullname, [SURFACE_DIR])
        if fullname.split(".", 1)[0] not in NAMES or path is None:
            return None
        why = unavailable(fullname)
        if why is not None:
            return importlib.machinery.ModuleSpec(fullname, _Unavailable(why))
        found = importlib.machinery.PathFinder.find_spec(fullname, path)
        if found is None and fullname.startswith("comfy_extras."):
            from .extras import find_spec

            found = find_spec(fullname)
        if found is None:
            note_missing(f"{fullname} (no such module on comfy-kernel)")
        return found

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
    if type(getattr(module, "__loader__", None)).__name__ == "ExtrasLoader":
        return True
    file = getattr(module, "__file__", None) or ""
    return os.path.abspath(file).startswith(SURFACE_DIR + os.sep)


install()
