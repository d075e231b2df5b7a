"""ComfyUI's ``nodes`` module: the node registry and the core node classes.

``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` are live views of
the kernel's node registry (core nodes included), so packs that read or
even write them at import time see and change what ``/object_info`` shows.
Core node classes (``nodes.KSampler``, ``nodes.SaveImage`` ...) are looked up
by name in the registry when accessed, which is why they work whichever
plugin provides them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, MutableMapping
from typing import Any

from comfy_kernel import progress as _progress
from comfy_kernel_compat import state

log = logging.getLogger("nodes")

MAX_RESOLUTION = 16384


def _registry() -> Any:
    kernel = state.kernel()
    if kernel is None:
        raise RuntimeError("the node registry exists only inside a running comfy-kernel server")
    return kernel.nodes


class _NodeClassMappings(MutableMapping):
    """``name → class`` over the kernel registry; assignment registers a node."""

    def __getitem__(self, name: str) -> type:
        cls = _registry().get(name)
        if cls is None:
            raise KeyError(name)
        return cls

    def __setitem__(self, name: str, cls: type) -> None:
        _registry().register(name, cls, source="compat")

    def __delitem__(self, name: str) -> None:
        if name not in _registry():
            raise KeyError(name)
        _registry().unregister(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_registry().names())

    def __len__(self) -> int:
        return len(_registry())

    def __contains__(self, name: object) -> bool:
        return name in _registry()

    def __repr__(self) -> str:
        return f"<NODE_CLASS_MAPPINGS: {len(self)} nodes>"


class _DisplayNameMappings(MutableMapping):
    """``name → display name`` for nodes that have one; assignment renames a registered node."""

    def __getitem__(self, name: str) -> str:
        entry = _registry().entry(name)
        if entry is None or not entry.display_name:
            raise KeyError(name)
        return entry.display_name

    def __setitem__(self, name: str, display_name: str) -> None:
        entry = _registry().entry(name)
        if entry is not None:
            entry.display_name = display_name
            _registry().version += 1

    def __delitem__(self, name: str) -> None:
        entry = _registry().entry(name)
        if entry is None or not entry.display_name:
            raise KeyError(name)
        entry.display_name = None
        _registry().version += 1

    def __iter__(self) -> Iterator[str]:
        return iter(list(_registry().display_names()))

    def __len__(self) -> int:
        return len(_registry().display_names())

    def __repr__(self) -> str:
        return f"<NODE_DISPLAY_NAME_MAPPINGS: {len(self)} names>"


NODE_CLASS_MAPPINGS: MutableMapping[str, type] = _NodeClassMappings()
NODE_DISPLAY_NAME_MAPPINGS: MutableMapping[str, str] = _DisplayNameMappings()


def __getattr__(name: str) -> Any:
    """Core node classes and the pack bookkeeping dicts, resolved when read."""
    kernel = state.kernel()
    if kernel is not None:
        if name == "EXTENSION_WEB_DIRS":
            return kernel.host.web_directories
        if name == "LOADED_MODULE_DIRS":
            return kernel.host.loaded_module_dirs
        cls = kernel.nodes.get(name)
        if cls is not None:
            return cls
        # A pip-installed pack can import before core nodes are registered:
        # look in the mappings plugins export themselves.
        for plugin in list(kernel.host.plugins.values()):
            mappings = getattr(plugin, "NODE_CLASS_MAPPINGS", None)
            if isinstance(mappings, dict) and name in mappings:
                return mappings[name]
            for entry in getattr(plugin, "NODES", None) or ():  # core_nodes: (name, class, display name)
                if isinstance(entry, tuple) and entry and entry[0] == name:
                    return entry[1]
    try:  # outside a server (a script importing a pack): the core nodes, if installed
        from comfy_kernel_core_nodes.nodes import NODES
    except ImportError:
        NODES = []
    for entry in NODES:
        if entry.name == name:
            return entry.cls
    raise AttributeError(f"module 'nodes' has no attribute {name!r}")


# --- interrupts ------------------------------------------------------------------------------


def interrupt_processing(value: bool = True) -> None:
    """Interrupt the prompt this node belongs to, or every running prompt when called elsewhere."""
    if _progress.current_run() is not None:
        _progress.interrupt_current_processing(value)
        return
    kernel = state.kernel()
    if value and kernel is not None and kernel.executor is not None:
        kernel.executor.interrupt()


def before_node_execution() -> None:
    """An interrupt checkpoint, as ComfyUI calls it before each node."""
    _progress.throw_exception_if_processing_interrupted()


# --- helpers packs call ----------------------------------------------------------------------


def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: Any, negative: Any, latent: Any, denoise: float = 1.0,
                    disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple:
    """Sample a latent as the KSampler nodes do: core_nodes' own ``common_ksampler``."""
    from comfy_kernel_core_nodes.nodes.ksampler import common_ksampler as run

    return run(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=denoise,
               disable_noise=disable_noise, start_step=start_step, last_step=last_step,
               force_full_denoise=force_full_denoise)


def load_custom_node(module_path: str, ignore: Any = (), module_parent: str = "custom_nodes") -> bool:
    """Load one more node pack (a folder or a ``.py`` file) into the running server."""
    kernel = state.kernel()
    if kernel is None:
        return False
    base = os.path.basename(os.path.normpath(module_path))
    name = base[:-3] if base.endswith(".py") else base
    record = kernel.host.load_node_pack(name, module_path, kernel.nodes)
    return record.status == "loaded"


def init_extra_nodes(init_custom_nodes: bool = True, init_api_nodes: bool = True) -> list[str]:
    """Packs are loaded by the kernel at start-up; nothing is left to do here."""
    return []
