"""``/object_info`` entries, byte-compatible in shape with ComfyUI's.

Classic (V1) nodes are described from their class attributes. V3 schema
nodes provide ``GET_NODE_INFO_V1()`` themselves (see
``comfy_kernel.nodes.io``); the registry adds the name, display name and
python module. The whole response is cached and rebuilt only when the
registry or a folder listing changes.
"""

from __future__ import annotations

import gzip
import logging
import os
from typing import Any

from ..http import dumps
from .registry import NodeEntry, NodeRegistry

log = logging.getLogger(__name__)


def _listify(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_listify(v) for v in value]
    if isinstance(value, list):
        return [_listify(v) for v in value]
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    return value


def node_info(entry: NodeEntry) -> dict[str, Any]:
    """The ``/object_info`` object of one node (raises if the node is broken)."""
    cls = entry.cls
    v3 = getattr(cls, "GET_NODE_INFO_V1", None)
    if callable(v3):
        info = dict(v3())
        info["name"] = entry.name
        if entry.display_name is not None:
            info["display_name"] = entry.display_name
        info["python_module"] = entry.python_module
        return info

    inputs = cls.INPUT_TYPES()
    info: dict[str, Any] = {"input": _listify(inputs),
                            "input_order": {k: list(v.keys()) for k, v in inputs.items()}}
    outputs = list(getattr(cls, "RETURN_TYPES", ()))
    info["output"] = _listify(outputs)
    out_list = getattr(cls, "OUTPUT_IS_LIST", None)
    info["output_is_list"] = list(out_list) if out_list is not None else [False] * len(outputs)
    names = getattr(cls, "RETURN_NAMES", None)
    info["output_name"] = list(names) if names is not None else _listify(outputs)
    info["name"] = entry.name
    info["display_name"] = entry.display_name or entry.name
    info["description"] = getattr(cls, "DESCRIPTION", "")
    info["python_module"] = entry.python_module
    info["category"] = getattr(cls, "CATEGORY", "sd")
    info["output_node"] = getattr(cls, "OUTPUT_NODE", False) is True
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    if getattr(cls, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(cls, "EXPERIMENTAL", False):
        info["experimental"] = True
    if hasattr(cls, "API_NODE"):
        info["api_node"] = cls.API_NODE
    for attr, key in (("SEARCH_ALIASES", "search_aliases"), ("DEV_ONLY", "dev_only"),
                      ("ESSENTIALS_CATEGORY", "essentials_category")):
        if hasattr(cls, attr):
            info[key] = _listify(getattr(cls, attr))
    return info


class ObjectInfoCache:
    """Caches the serialised ``/object_info`` response.

    The key is the registry version plus a fingerprint of every directory
    whose contents nodes list (model folders walked so far, and the input
    directory), so new model files and uploads appear on the next request.
    """

    def __init__(self, registry: NodeRegistry, folders: Any):
        self.registry = registry
        self.folders = folders
        self._key: Any = None
        self._body: bytes = b"{}"
        self._gzipped: tuple[bytes, bytes] | None = None  # (body, its gzip) for remote clients
        self._infos: dict[str, dict[str, Any]] = {}

    def _fingerprint(self) -> Any:
        stamps = []
        for name in self.folders.names():
            cached = self.folders._cache.get(name)
            if cached is None:
                continue
            for directory in cached[1]:
                try:
                    stamps.append(os.stat(directory).st_mtime_ns)
                except OSError:
                    stamps.append(-1)
        for d in (self.folders.dirs.input,):
            try:
                stamps.append(os.stat(d).st_mtime_ns)
            except OSError:
                stamps.append(-1)
        remote = getattr(self.folders, "remote", None)
        return (self.registry.version, self.folders.version, tuple(stamps), remote.version if remote else 0)

    def build(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in self.registry.entries():
            try:
                out[entry.name] = node_info(entry)
            except Exception:
                log.exception("[ERROR] An error occurred while retrieving information for the '%s' node.",
                              entry.name)
        return out

    def body(self) -> bytes:
        key = self._fingerprint()
        if key != self._key:
            self._infos = self.build()
            self._body = dumps(self._infos)
            self._key = self._fingerprint()
        return self._body

    def gzipped(self, body: bytes) -> bytes:
        """``body`` gzip-compressed, kept until the body changes.

        A browser on another machine reads an eighth of the bytes (about 40 KB
        instead of 320 KB with every core node); compressing costs a few
        milliseconds once per change of the answer.
        """
        return self.gzipped_now(body) or self._compress(body)

    def gzipped_now(self, body: bytes) -> bytes | None:
        """The kept gzip of ``body``, or None when it must be compressed first (see :meth:`gzipped`)."""
        cached = self._gzipped
        return cached[1] if cached is not None and cached[0] is body else None

    def _compress(self, body: bytes) -> bytes:
        compressed = gzip.compress(body, 6)
        self._gzipped = (body, compressed)
        return compressed

    def current(self) -> bytes | None:
        """The cached body while nothing it depends on changed, else None (then :meth:`body` rebuilds it).

        Checking costs a few ``stat`` calls, cheap enough for the event loop; only a rebuild, which
        calls every node's ``INPUT_TYPES``, needs a thread.
        """
        return self._body if self._key is not None and self._fingerprint() == self._key else None

    def one(self, name: str) -> dict[str, Any]:
        entry = self.registry.entry(name)
        if entry is None:
            return {}
        try:
            return {name: node_info(entry)}
        except Exception:
            log.exception("object_info failed for %s", name)
            return {}
