"""``comfy_extras.<module>``: ComfyUI's extra node modules, built from the core nodes that name them.

Every core node declares the ComfyUI module it lives in (``NodeDef.python_module``).
``import comfy_extras.nodes_mask`` builds a module holding those node classes
under their node names and class names, plus the public names (helper functions
such as ``composite``) of the core_nodes modules that define them, so the
objects are core_nodes' own. A module no core node names does not exist
(ModuleNotFoundError, as in a ComfyUI without that feature). Names not found
fall back to any registered node class of that name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import finder  # noqa: F401 - the ComfyUI names must resolve before ``nodes`` is imported

PACKAGE = "comfy_extras"

#: Helpers packs import from a ComfyUI module that core_nodes keeps elsewhere (same objects, same signatures).
_MS = "comfy_kernel_core_nodes.model.model_sampling"
_GUIDERS = "comfy_kernel_core_nodes.sampling.guiders"
HELPERS = {
    "comfy_extras.nodes_mask": {"composite": ("comfy_kernel_core_nodes.nodes.image_ops", "paste")},
    "comfy_extras.nodes_model_advanced": {"LCM": (_MS, "LCM"), "X0": (_MS, "X0"),
                                          "ModelSamplingDiscreteDistilled": (_MS, "ModelSamplingDiscreteDistilled")},
    "comfy_extras.nodes_perpneg": {"Guider_PerpNeg": (_GUIDERS, "Guider_PerpNeg"), "perp_neg": (_GUIDERS, "perp_neg")},
    "comfy_extras.nodes_custom_sampler": {"Guider_Basic": (_GUIDERS, "Guider_Basic"),
                                          "Guider_DualCFG": (_GUIDERS, "Guider_DualCFG")},
}


def node_class_getattr(module_name: str) -> Callable[[str], Any]:
    """A PEP 562 ``__getattr__`` returning the registered node class of that name."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        import nodes

        try:
            return getattr(nodes, name)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r} "
                                 f"(no node of that name is registered)") from None

    return __getattr__


def core_node_defs(module_name: str) -> list[Any]:
    """The core_nodes NodeDefs whose ComfyUI module is ``module_name`` (empty without core_nodes)."""
    try:
        from comfy_kernel_core_nodes.nodes import NODES
    except ImportError:
        return []
    return [d for d in NODES if d.python_module == module_name]


def fill(module: ModuleType, defs: list[Any]) -> None:
    """Put the defining modules' public names, then the node classes, into ``module``."""
    namespace = vars(module)
    for source in dict.fromkeys(d.cls.__module__ for d in defs):
        for name, value in vars(sys.modules[source]).items():
            if not name.startswith("_") and name not in ("NODES", "annotations"):
                namespace.setdefault(name, value)
    for name, (source, attr) in HELPERS.get(module.__name__, {}).items():
        try:
            namespace[name] = getattr(importlib.import_module(source), attr)
        except (ImportError, AttributeError):
            continue  # not in this core_nodes version: the name stays missing
    for d in defs:
        namespace[d.name] = d.cls
        namespace.setdefault(d.cls.__name__, d.cls)


class ExtrasLoader(importlib.abc.Loader):
    """Builds ``comfy_extras.<name>`` from the core nodes that declare it."""

    def __init__(self, defs: list[Any]):
        self.defs = defs

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__doc__ = f"ComfyUI's {module.__name__}: the core nodes it holds and their helpers."
        fill(module, self.defs)
        module.__getattr__ = node_class_getattr(module.__name__)  # type: ignore[attr-defined]


def find_spec(fullname: str) -> importlib.machinery.ModuleSpec | None:
    """A spec for ``comfy_extras.<name>`` when core nodes name that module, else None."""
    if fullname.count(".") != 1:
        return None
    defs = core_node_defs(fullname)
    if not defs:
        return None
    return importlib.machinery.ModuleSpec(fullname, ExtrasLoader(defs))


def module_getattr(name: str) -> Any:
    """``comfy_extras.nodes_x`` read as an attribute imports that submodule."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return importlib.import_module(f"{PACKAGE}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None
