"""Cache keys (input signatures) and the output caches (spec §5.11).

A node's key must change when anything it depends on changes: its class,
its IS_CHANGED fingerprint, its constants, and — through its links — the
keys of its sources. ComfyUI rebuilds each key from the node's whole
ancestry, which makes a chain of N nodes cost O(N²). Here each key is a
16-byte digest of the node's *immediate* signature with every link replaced
by the source's key, so it is computed once per node from its parents' keys:
O(nodes + edges) per prompt, and equal sub-graphs still share keys.

A key of None means "not cacheable" (an unhashable constant, a NaN
fingerprint, a missing source); it never matches, and neither do its
descendants' keys.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import orjson

from ..nodes.graph_utils import is_link

_DUMP_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


class Signatures:
    """Keys of the run's nodes; ``key(id)`` computes (and memoises) on demand.

    ``owner`` (the prompt owner's identity key) is part of every key: an output
    computed for one owner (say from a file only they may open) is never
    handed to another owner's identical node.
    """

    def __init__(self, dynprompt: Any, defs: Any, fingerprints: dict[str, Any], owner: str | None = None):
        self.dynprompt = dynprompt
        self.defs = defs
        self.fingerprints = fingerprints  # node id -> IS_CHANGED value (absent: no hook)
        self.owner = owner
        self.keys: dict[str, str | None] = {}

    def key(self, node_id: str) -> str | None:
        keys = self.keys
        if node_id in keys:
            return keys[node_id]
        stack = [node_id]
        visiting: set[str] = set()
        while stack:
            nid = stack[-1]
            if nid in keys:
                stack.pop()
                continue
            if not self.dynprompt.has_node(nid):
                keys[nid] = None
                stack.pop()
                continue
            node = self.dynprompt.get_node(nid)
            missing = [v[0] for v in node["inputs"].values() if is_link(v) and v[0] not in keys]
            if missing and nid not in visiting:
                visiting.add(nid)
                stack.extend(m for m in missing if m not in visiting)
                continue
            stack.pop()
            visiting.discard(nid)
            keys[nid] = self._immediate(nid, node)
        return keys[node_id]

    def _immediate(self, node_id: str, node: dict[str, Any]) -> str | None:
        class_type = node["class_type"]
        ndef = self.defs.get(class_type)
        fingerprint = self.fingerprints.get(node_id, False)
        if _has_nan(fingerprint):
            return None
        parts: list[Any] = [class_type, fingerprint, node_id if ndef is not None and ndef.id_in_key else None,
                            self.owner]
        keys = self.keys
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value):
                src = keys.get(value[0])
                if src is None:
                    return None
                parts.append((name, "\x00link", src, value[1]))
            else:
                parts.append((name, value))
        try:
            blob = orjson.dumps(parts, option=_DUMP_OPTS)
        except (TypeError, orjson.JSONEncodeError):
            return None
        return hashlib.blake2b(blob, digest_size=16).hexdigest()


def _has_nan(value: Any) -> bool:
    """NaN never equals itself: a NaN fingerprint (or list item) makes the node uncacheable."""
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list):
        return any(isinstance(v, float) and math.isnan(v) for v in value)
    return False


class CacheEntry:
    __slots__ = ("outputs", "ui")

    def __init__(self, outputs: list[list[Any]], ui: dict[str, Any] | None):
        self.outputs = outputs
        self.ui = ui


class OutputCache:
    """Classic mode: keep only what the current prompt can use.

    Entries of ephemeral nodes live in a per-expanding-node sub-cache that
    survives while that node's top-level ancestor is still in the prompt
    with the same class, and is replaced on each new expansion of it.
    """

    def __init__(self) -> None:
        self.entries: dict[str, CacheEntry] = {}
        self.children: dict[str, dict[str, str]] = {}  # expanding node id -> {ephemeral id: key}
        self.roots: dict[str, tuple[str, str]] = {}  # expanding node id -> (real id, real class)
        self.current: set[str] = set()

    def start_prompt(self, keys: set[str], prompt: dict[str, Any]) -> None:
        live: set[str] = set(keys)
        for parent, (real, real_class) in list(self.roots.items()):
            node = prompt.get(real)
            if node is not None and node.get("class_type") == real_class:
                live.update(self.children.get(parent, {}).values())
            else:
                self.roots.pop(parent, None)
                self.children.pop(parent, None)
        self.entries = {k: v for k, v in self.entries.items() if k in live}
        self.current = keys

    def get(self, key: str | None) -> CacheEntry | None:
        return self.entries.get(key) if key is not None else None

    def set(self, key: str | None, entry: CacheEntry) -> None:
        if key is not None:
            self.entries[key] = entry

    def register_expansion(self, parent_id: str, root: tuple[str, str], new_keys: dict[str, str | None]) -> None:
        old = self.children.get(parent_id, {})
        fresh = {k: v for k, v in new_keys.items() if v is not None}
        keep = set(fresh.values()) | self.current
        for _nid, key in old.items():
            if key not in keep:
                self.entries.pop(key, None)
        self.children[parent_id] = fresh
        self.roots[parent_id] = root

    def after_node(self) -> None:
        """Called after each node; memory-bounded modes evict here."""

    def clear(self) -> None:
        self.entries.clear()
        self.children.clear()
        self.roots.clear()


class LRUOutputCache(OutputCache):
    """``--cache-lru N``: up to N entries across prompts, evicted by whole generations."""

    def __init__(self, max_size: int):
        super().__init__()
        self.max_size = max_size
        self.generation = 0
        self.gen_of: dict[str, int] = {}

    def start_prompt(self, keys: set[str], prompt: dict[str, Any]) -> None:
        self.generation += 1
        for k in keys:
            if k in self.entries:
                self.gen_of[k] = self.generation
        self.current = keys
        self._evict()

    def get(self, key: str | None) -> CacheEntry | None:
        entry = self.entries.get(key) if key is not None else None
        if entry is not None:
            self.gen_of[key] = self.generation  # type: ignore[index]
        return entry

    def set(self, key: str | None, entry: CacheEntry) -> None:
        if key is None:
            return
        self.entries[key] = entry
        self.gen_of[key] = self.generation
        self._evict()

    def register_expansion(self, parent_id: str, root: tuple[str, str], new_keys: dict[str, str | None]) -> None:
        pass  # ephemeral entries are stored flat

    def _over(self) -> bool:
        return len(self.entries) > self.max_size

    def _evict(self) -> None:
        if not self._over():
            return
        for key in sorted(self.entries, key=lambda k: self.gen_of.get(k, 0)):
            if self.gen_of.get(key, 0) >= self.generation or not self._over():
                break
            del self.entries[key]
            self.gen_of.pop(key, None)


class RamPressureCache(LRUOutputCache):
    """``--cache-ram [GB]``: unbounded LRU that evicts older generations when free RAM is low."""

    def __init__(self, headroom_gb: float):
        super().__init__(max_size=0)
        self.headroom = headroom_gb * (1024 ** 3)
        self._checked = 0.0

    def _over(self) -> bool:
        try:
            import psutil

            return psutil.virtual_memory().available < self.headroom and bool(self.entries)
        except Exception:
            return False

    def set(self, key: str | None, entry: CacheEntry) -> None:
        if key is None:
            return
        self.entries[key] = entry
        self.gen_of[key] = self.generation

    def after_node(self) -> None:
        now = time.monotonic()
        if now - self._checked > 0.5:  # psutil is cheap but not free
            self._checked = now
            self._evict()


class NoOutputCache(OutputCache):
    """``--cache-none``: nothing is kept, so an output lives only as long as the run needs it.

    ``set`` stores nothing: the engine drops each output from the run as soon as
    every consumer has executed (``Engine._release``), and a copy here would keep
    it alive until the next prompt.
    """

    def start_prompt(self, keys: set[str], prompt: dict[str, Any]) -> None:
        self.clear()
        self.current = keys

    def set(self, key: str | None, entry: CacheEntry) -> None:
        pass

    def register_expansion(self, parent_id: str, root: tuple[str, str], new_keys: dict[str, str | None]) -> None:
        pass


def make_cache(config: Any) -> OutputCache:
    if getattr(config, "cache_none", False):
        return NoOutputCache()
    lru = getattr(config, "cache_lru", 0) or 0
    if lru > 0:
        return LRUOutputCache(lru)
    ram = getattr(config, "cache_ram", 0.0) or 0.0
    if ram > 0:
        return RamPressureCache(ram)
    return OutputCache()


class ObjectCache:
    """Node instances by ``(node id, class_type)``, reused across prompts (spec §2.9)."""

    def __init__(self, keep: bool = True):
        self.keep = keep
        self.objects: dict[tuple[str, str], Any] = {}

    def start_prompt(self, prompt: dict[str, Any]) -> None:
        if not self.keep:
            self.objects.clear()
            return
        self.objects = {k: v for k, v in self.objects.items()
                        if k[0] in prompt and prompt[k[0]].get("class_type") == k[1]}

    def get(self, node_id: str, class_type: str) -> Any:
        return self.objects.get((node_id, class_type))

    def set(self, node_id: str, class_type: str, obj: Any) -> None:
        self.objects[(node_id, class_type)] = obj

    def clear(self) -> None:
        self.objects.clear()
