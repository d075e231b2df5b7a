"""ComfyUI module names that are the core_nodes plugin's own modules under another name.

One source of truth: ``comfy.model_patcher.ModelPatcher`` *is*
``comfy_kernel_core_nodes.model.patcher.ModelPatcher`` (same class object), so
``isinstance`` checks, subclasses and monkeypatches made through either name
agree. :func:`reexport` copies a source module's public names (including the
names it imported, as ComfyUI's modules expose theirs) into the ComfyUI-named
module at import time.

A source that is not installed (core_nodes absent, or a model family not
implemented) makes the ComfyUI-named module fail to import with an
ImportError naming both the ComfyUI module and what is missing; the pack that
imported it is then recorded as failed with that message.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from comfy_kernel.plugins import note_missing

CORE = "comfy_kernel_core_nodes"


class MissingFeature(ModuleNotFoundError):
    """A ComfyUI module or name whose implementation is not installed on this server.

    A ModuleNotFoundError, so packs that probe with ``hasattr(comfy, name)`` or
    catch either ImportError or ModuleNotFoundError go on without it; the node
    pack being imported gets the message in its record (``missing``).
    """

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message, name=name)
        note_missing(message)


def _load(comfy_name: str, source: str) -> Any:
    full = source if source.startswith(CORE) else f"{CORE}.{source}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        raise MissingFeature(f"{comfy_name} is not available on comfy-kernel: it needs {full} "
                             f"({exc})", name=comfy_name) from exc


def reexport(namespace: dict[str, Any], sources: Iterable[str], *, optional: Iterable[str] = (),
             aliases: Mapping[str, str] | None = None) -> None:
    """Fill ``namespace`` (a module's globals) with the public names of ``sources``.

    Later sources win over earlier ones; names already defined in ``namespace``
    (the module's own adapters) are kept. ``optional`` sources are skipped when
    absent. ``aliases`` maps a ComfyUI name to a name already collected (its
    spelling in core_nodes).
    """
    comfy_name = namespace["__name__"]
    own = {k for k in namespace if not k.startswith("__")}
    collected: dict[str, Any] = {}
    modules = [_load(comfy_name, s) for s in sources]
    for source in optional:
        try:
            modules.append(_load(comfy_name, source))
        except MissingFeature:
            continue
    for module in modules:
        names = getattr(module, "__all__", None)
        if names is None:
            names = [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            collected[name] = getattr(module, name)
        # Public names listed in __all__ leave out the module's imports; ComfyUI's modules expose them.
        for name, value in vars(module).items():
            if not name.startswith("_") and name not in collected:
                collected[name] = value
    for comfy, ours in (aliases or {}).items():
        if ours in collected:
            collected[comfy] = collected[ours]
    for name, value in collected.items():
        if name not in own:
            namespace[name] = value


def missing_getattr(comfy_name: str, what: str = "") -> Any:
    """A PEP 562 ``__getattr__`` whose error says the name is not implemented (not just absent)."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{comfy_name}.{name} is not available on comfy-kernel{what}")

    return __getattr__


def stand_ins(namespace: dict[str, Any], base: type, names: Iterable[str], why: str) -> None:
    """Define each of ``names`` not already in ``namespace`` as an empty subclass of ``base``.

    For ComfyUI classes packs only name in ``isinstance`` checks or lists of
    types: no object here is an instance of them, so those checks are False.
    """
    for name in names:
        if name not in namespace:
            namespace[name] = type(name, (base,), {"__module__": namespace["__name__"],
                                                   "__doc__": f"ComfyUI's {name}: {why}"})


def submodule_getattr(package: str) -> Any:
    """A package ``__getattr__`` importing a submodule read as an attribute (``comfy.ldm.models``).

    In ComfyUI some other module has always imported it first; here it is imported on first use.
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__


def not_implemented(namespace: dict[str, Any], why: str) -> NoReturn:
    """Fail the import of the ComfyUI module whose globals are ``namespace``, saying why it is absent."""
    name = namespace["__name__"]
    raise MissingFeature(f"{name} is not available on comfy-kernel: {why}", name=name)
