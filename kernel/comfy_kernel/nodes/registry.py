"""Node classes by name, from plugins and legacy node packs.

Registration order is kept: it is the order of ``/object_info``. Names
registered by first-party plugins (``reserved=True``) cannot be taken over by
a later node pack, as ComfyUI protects its core nodes; among packs a later one
overrides an earlier one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class NodeEntry:
    name: str
    cls: type
    display_name: str | None
    python_module: str
    source: str
    reserved: bool


class NodeRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, NodeEntry] = {}
        self._lock = threading.Lock()
        self.version = 0

    def register(self, name: str, cls: type, display_name: str | None = None, *,
                 python_module: str | None = None, source: str = "kernel",
                 reserved: bool = False) -> bool:
        """Add ``cls`` under ``name``; returns False if a reserved name blocked it."""
        with self._lock:
            existing = self._nodes.get(name)
            if existing is not None and existing.reserved and not reserved:
                if display_name:
                    existing.display_name = display_name
                log.info("node %s from %s ignored: the name is reserved by %s", name, source, existing.source)
                return False
            module = python_module or getattr(cls, "RELATIVE_PYTHON_MODULE", None) or "nodes"
            if not getattr(cls, "RELATIVE_PYTHON_MODULE", None):
                try:
                    cls.RELATIVE_PYTHON_MODULE = module
                except (AttributeError, TypeError):
                    pass
            if display_name is None and existing is not None:
                display_name = existing.display_name
            self._nodes[name] = NodeEntry(name, cls, display_name, module, source, reserved)
            self.version += 1
            return True

    def register_mappings(self, mappings: dict[str, type], display_names: dict[str, str] | None = None,
                          *, python_module: str, source: str, reserved: bool = False) -> list[str]:
        """Register a ComfyUI-style ``NODE_CLASS_MAPPINGS`` dict; returns the names taken."""
        display_names = display_names or {}
        taken = []
        for name, cls in mappings.items():
            if self.register(name, cls, display_names.get(name), python_module=python_module,
                             source=source, reserved=reserved):
                taken.append(name)
        for name, display in display_names.items():
            entry = self._nodes.get(name)
            if entry is not None and name not in mappings:
                entry.display_name = display
        return taken

    def unregister(self, name: str) -> None:
        with self._lock:
            if self._nodes.pop(name, None) is not None:
                self.version += 1

    def get(self, name: str) -> type | None:
        entry = self._nodes.get(name)
        return entry.cls if entry else None

    def entry(self, name: str) -> NodeEntry | None:
        return self._nodes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def names(self) -> list[str]:
        return list(self._nodes)

    def entries(self) -> list[NodeEntry]:
        return list(self._nodes.values())

    def class_mappings(self) -> dict[str, type]:
        return {name: e.cls for name, e in self._nodes.items()}

    def display_names(self) -> dict[str, str]:
        return {name: e.display_name for name, e in self._nodes.items() if e.display_name}

    def by_source(self, source: str) -> list[str]:
        return [n for n, e in self._nodes.items() if e.source == source]

    def as_dict(self) -> dict[str, Any]:
        return {n: {"source": e.source, "python_module": e.python_module} for n, e in self._nodes.items()}
