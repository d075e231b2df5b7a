"""Where node packs live on disk, for the routes that read files they ship.

Translations, example workflows and subgraph blueprints are plain files in a
pack's directory. Packs come from the ``custom_nodes`` folders (loaded by the
kernel or not) and from pip (entry-point packs, whose directory is their
module's).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _module_dir(module: Any) -> str | None:
    file = getattr(module, "__file__", None)
    if not file:
        return None
    return os.path.dirname(os.path.abspath(file))


def pip_pack_dirs(kernel: Any) -> dict[str, str]:
    """``{pack name: directory}`` of node packs installed with pip, and of loaded plugins
    (whose package may ship example workflows too, as core_nodes ships its starter workflow)."""
    out: dict[str, str] = {}
    for name, module in sorted(getattr(kernel.host, "plugins", {}).items()):
        package = sys.modules.get(getattr(module, "__name__", "").split(".")[0])
        if package is not None and getattr(package, "__path__", None):  # a package, not a lone module
            directory = _module_dir(package)
            if directory and os.path.isdir(directory):
                out[name] = directory
    for name, module in sorted(getattr(kernel.host, "pip_packs", {}).items()):
        directory = _module_dir(module)
        if directory and os.path.isdir(directory):
            out[name] = directory
    return out


def loaded_pack_dirs(kernel: Any) -> dict[str, str]:
    """``{pack name: directory}`` of packs the kernel loaded (folders and pip)."""
    out = {name: path for name, path in sorted(kernel.host.loaded_module_dirs.items()) if os.path.isdir(path)}
    for name, path in pip_pack_dirs(kernel).items():
        out.setdefault(name, path)
    return out


def all_pack_dirs(kernel: Any) -> list[tuple[str, str]]:
    """Every directory directly under each ``custom_nodes`` folder, sorted, then pip packs."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for folder in kernel.folders.paths("custom_nodes"):
        if not os.path.isdir(folder):
            continue
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if os.path.isdir(path) and entry != "__pycache__":
                out.append((entry, path))
                seen.add(os.path.realpath(path))
    for name, path in pip_pack_dirs(kernel).items():
        if os.path.realpath(path) not in seen:
            out.append((name, path))
    return out
