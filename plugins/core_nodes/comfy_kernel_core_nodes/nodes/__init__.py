"""ComfyUI's core nodes, one module per category.

Every module of this package that defines ``NODES`` (a list of
:class:`~.common.NodeDef`) contributes its nodes; adding a category means
adding a module, nothing else. Model families contribute theirs from
``families/<family>/nodes.py`` the same way.

Importing these modules must not import torch: every node imports torch and
the model code inside its function, so the server's start-up and
``/object_info`` stay light (a test enforces it).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

from .common import NodeDef


def _collect(package: str, path: list[str]) -> list[NodeDef]:
    found: list[NodeDef] = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        found.extend(getattr(module, "NODES", ()))
    return found


def _family_nodes() -> list[NodeDef]:
    from .. import families

    found: list[NodeDef] = []
    for info in sorted(pkgutil.iter_modules(families.__path__), key=lambda m: m.name):
        if info.ispkg and importlib.util.find_spec(f"{families.__name__}.{info.name}.nodes") is not None:
            module = importlib.import_module(f"{families.__name__}.{info.name}.nodes")
            found.extend(getattr(module, "NODES", ()))
    return found


def __getattr__(name: str) -> list[NodeDef]:
    """``NODES``, every core node (the category modules' here, then the model families'), collected on first
    use: a family's node module may import this package's helpers (``context``, ``common``) before its own
    ``NODES`` exists, which collecting at import time would read half-built."""
    if name != "NODES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    nodes = _collect(__name__, __path__) + _family_nodes()
    globals()["NODES"] = nodes
    return nodes
