"""How long each node of a run took, for metering (``ck_prompt_finished``'s ``nodes``).

Host time is two ``perf_counter`` reads per executed node. On a CUDA worker
each node's span is also bracketed with CUDA events on the device's current
stream, read once when the run ends: kernels run asynchronously, so a node
that queues work and returns at once is charged for that work, not the next
node that happens to wait for it. Anything that goes wrong with the events
falls back to host time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

clock = time.perf_counter


def worker_device() -> Any:
    """The DeviceInfo of the worker running the caller, or None (no GPU package in use)."""
    workers = sys.modules.get("comfy_kernel.gpu.workers")
    return workers._current.get() if workers is not None else None


class NodeTimes:
    """Accumulated wall (and, on CUDA, device) time per node id of one run."""

    __slots__ = ("wall", "events", "stream", "torch")

    def __init__(self, device: Any = None):
        self.wall: dict[str, float] = {}
        self.events: dict[str, list[Any]] | None = None
        self.stream: Any = None
        self.torch: Any = None
        if device is not None and getattr(device, "type", None) == "cuda" and "torch" in sys.modules:
            torch = sys.modules["torch"]
            try:
                self.stream = torch.cuda.current_stream(device.index or 0)
                self.events = {}
                self.torch = torch
            except Exception:
                self.events = None

    def begin(self) -> Any:
        """Mark the start of a node span; returns what :meth:`end` needs."""
        if self.events is None:
            return clock()
        try:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record(self.stream)
        except Exception:
            self.events = None
            event = None
        return (clock(), event)

    def end(self, node_id: str, mark: Any) -> None:
        now = clock()
        if self.events is None or not isinstance(mark, tuple):
            start = mark[0] if isinstance(mark, tuple) else mark
            self.wall[node_id] = self.wall.get(node_id, 0.0) + (now - start)
            return
        start, first = mark
        self.wall[node_id] = self.wall.get(node_id, 0.0) + (now - start)
        if first is None:
            return
        try:
            last = self.torch.cuda.Event(enable_timing=True)
            last.record(self.stream)
            self.events.setdefault(node_id, []).append((first, last))
        except Exception:
            self.events = None

    def device_seconds(self) -> dict[str, float] | None:
        """Per-node device time from the CUDA events (waits for the stream once), or None."""
        if not self.events:
            return None
        try:
            self.stream.synchronize()
            return {node_id: sum(a.elapsed_time(b) for a, b in pairs) / 1000.0
                    for node_id, pairs in self.events.items()}
        except Exception:
            return None

    def report(self, class_of: Any, cached: set[str]) -> NodeReport:
        """The per-node figures; device time is read now (on the worker), the rest on first use."""
        return NodeReport(self.wall, self.device_seconds(), class_of, cached)


class NodeReport(Mapping):
    """``{node_id: {"class_type", "wall_s", "busy_s", "cached"}}``, built when first read.

    Most prompts finish with nobody reading it, so a long chain pays nothing
    for building one small dict per node.
    """

    __slots__ = ("_wall", "_device", "_class_of", "_cached", "_data")

    def __init__(self, wall: dict[str, float], device: dict[str, float] | None, class_of: Any,
                 cached: set[str]):
        self._wall, self._device, self._class_of, self._cached = wall, device, class_of, cached
        self._data: dict[str, dict[str, Any]] | None = None

    def _built(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            device, class_of, cached = self._device, self._class_of, self._cached
            self._data = {node_id: {"class_type": class_of(node_id), "wall_s": wall,
                                    "busy_s": device.get(node_id, 0.0) if device is not None else wall,
                                    "cached": node_id in cached}
                          for node_id, wall in self._wall.items()}
        return self._data

    def busy_total(self) -> float:
        """The sum of every node's ``busy_s``, without building the per-node figures."""
        if self._device is not None:
            return sum(self._device.values())
        return sum(self._wall.values())

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._built()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._wall)
