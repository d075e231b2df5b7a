"""The model memory manager: which model sits where, and who moves it.

A model lives in one of three tiers:

- **device**: on its compute device, ready to run;
- **offload**: in host memory ("cpu" by default), one copy away from the device;
- **disk**: not in memory at all, re-created by its loader (usually from a
  memory-mapped .safetensors file) when next needed.

A model that does not fit on its device even after eviction runs *streamed*
(weights in the offload tier, moved layer by layer; see streaming.py).

Models are registered once (the same key on the same device returns the same
handle, so a checkpoint is never loaded twice) and used through
``with manager.use(handle) as model:``, which loads the model and pins it:
pinned models are never evicted. Eviction is least-recently-used: the device
tier spills into the offload tier, which spills to disk.

Memory budgets can be real (free memory reported by the driver, minus a
reserve) or simulated (``budgets={"cpu": 100 * 2**20}``), so the policy can be
tested on a CPU-only machine by treating "cpu" as the device. All bookkeeping
sits behind one lock; the copy that loads a model runs outside it, so workers
on other devices keep going, while a second user of the same model waits for
the first load instead of starting another.
"""

from __future__ import annotations

import gc
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .config import GpuConfig
from .devices import DeviceInfo, memory_stats, parse_device, ram_stats, reserve_bytes
from .loading import file_loader, weights_size
from .streaming import WeightStreamer

DEVICE, OFFLOAD, DISK, STREAMED = "device", "offload", "disk", "streamed"

#: Host memory left free when the offload tier has no simulated budget.
DEFAULT_RAM_RESERVE = 1024**3


class OutOfMemory(MemoryError):
    """Raised when a model fits neither on its device nor in the offload tier."""


def module_size(model: Any) -> int:
    """Bytes of a module's parameters and buffers (shared storages counted once)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    tensors = list(model.parameters()) + list(model.buffers()) if hasattr(model, "parameters") else []
    for t in tensors:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key in seen and storage.data_ptr() != 0:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


@dataclass(eq=False)
class ModelHandle:
    """A registered model. Read ``model`` only inside ``manager.use(handle)``: it moves otherwise."""

    key: str
    device: str
    loader: Callable[[str], Any]
    size: int | None = None
    state: str = DISK
    model: Any = None
    pins: int = 0
    last_used: int = 0
    loads: int = 0
    busy: bool = False
    streamer: WeightStreamer | None = field(default=None, repr=False)

    @property
    def loaded(self) -> bool:
        return self.state != DISK


class ModelManager:
    """Loads, keeps and evicts models by memory budget (see the module docstring).

    ``device``: the default compute device (else the current worker's).
    ``budgets``: simulated byte budgets per device string; devices without one
    use real free memory. ``offload_device``: the host tier (None: evicted
    models go straight to disk). ``offload_budget``: simulated host budget.
    """

    def __init__(self, device: DeviceInfo | str | None = None, *, budgets: Mapping[str, int] | None = None,
                 offload_device: str | None = "cpu", offload_budget: int | None = None,
                 config: GpuConfig | None = None) -> None:
        self.config = config or GpuConfig()
        self.default_device = None if device is None else parse_device(device).torch_device
        self.budgets = dict(budgets or {})
        self.offload_device = offload_device
        self.offload_budget = offload_budget
        self._handles: dict[str, ModelHandle] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._clock = itertools.count(1)

    # -- registration -------------------------------------------------------

    def _device_for(self, device: DeviceInfo | str | None) -> str:
        if device is not None:
            return parse_device(device).torch_device
        if self.default_device is not None:
            return self.default_device
        from .workers import current_device

        return current_device().torch_device

    def register(self, key: str, loader: Callable[[str], Any], *, size: int | None = None,
                 device: DeviceInfo | str | None = None) -> ModelHandle:
        """Register a model; ``loader(device_string)`` creates it on that device.

        Registering the same ``key`` for the same device again returns the
        first handle. ``size`` in bytes lets the manager make room before
        loading; without it the model is measured after a first host load.
        """
        dev = self._device_for(device)
        full_key = f"{key}@{dev}"
        with self._lock:
            handle = self._handles.get(full_key)
            if handle is None:
                handle = ModelHandle(key=key, device=dev, loader=loader, size=size)
                self._handles[full_key] = handle
            return handle

    def register_file(self, path: str | os.PathLike[str], build: Callable[[dict[str, Any]], Any], *,
                      prefix: str = "", dtype: Any = None,
                      device: DeviceInfo | str | None = None) -> ModelHandle:
        """Register the model built from the tensors under ``prefix`` of a .safetensors file.

        The key is the file's real path plus the prefix, so the UNet, VAE and
        text encoder of one checkpoint are three models, each loaded once.
        """
        path = os.path.realpath(path)
        dtype_size = None if dtype is None else dtype.itemsize
        size = weights_size(path, prefix, dtype_size)
        return self.register(f"{path}#{prefix}", file_loader(path, build, prefix=prefix, dtype=dtype),
                             size=size, device=device)

    def handles(self) -> list[ModelHandle]:
        with self._lock:
            return list(self._handles.values())

    def forget(self, handle: ModelHandle) -> None:
        """Drop a model and its registration (e.g. the file was deleted)."""
        with self._lock:
            if handle.pins:
                raise RuntimeError(f"{handle.key} is in use")
            self._drop(handle)
            self._handles.pop(f"{handle.key}@{handle.device}", None)

    # -- use ----------------------------------------------------------------

    @contextmanager
    def use(self, handle: ModelHandle) -> Iterator[Any]:
        """Load ``handle`` onto its device (or stream it) and pin it for the block."""
        with self._lock:
            handle.pins += 1
        try:
            self._ready(handle)
            with self._lock:
                handle.last_used = next(self._clock)
                model = handle.model
        except BaseException:
            with self._lock:
                handle.pins -= 1
            raise
        try:
            yield model
        finally:
            with self._lock:
                handle.pins -= 1
                handle.last_used = next(self._clock)

    def load(self, handle: ModelHandle) -> Any:
        """Make ``handle`` ready without pinning it (prefetch)."""
        with self.use(handle) as model:
            return model

    # -- freeing ------------------------------------------------------------

    def free_memory(self, needed: int | None = None, device: DeviceInfo | str | None = None) -> int:
        """Offload unpinned models from ``device`` until ``needed`` bytes are free (all of them if None).

        Returns the bytes moved off the device. Used before big activations
        and by POST /free {"free_memory": true}.
        """
        dev = self._device_for(device)
        with self._lock:
            freed = 0
            for handle in self._lru(DEVICE, dev):
                if needed is not None and self._available(dev) >= needed:
                    break
                freed += handle.size or 0
                self._demote(handle)
        self._empty_cache(dev)
        return freed

    def unload_all(self) -> int:
        """Drop every unpinned model to disk (POST /free {"unload_models": true}); returns how many."""
        with self._lock:
            victims = [h for h in self._handles.values() if h.loaded and not h.pins]
            for handle in victims:
                self._drop(handle)
        gc.collect()
        for dev in {h.device for h in victims}:
            self._empty_cache(dev)
        return len(victims)

    def stats(self) -> dict[str, Any]:
        """Per-model state, for logs and /system_stats extensions."""
        with self._lock:
            return {"models": [{"key": h.key, "device": h.device, "state": h.state, "size": h.size,
                                "pinned": h.pins > 0, "loads": h.loads} for h in self._handles.values()],
                    "offload_used": self._used(OFFLOAD, None)}

    # -- policy -------------------------------------------------------------

    def _used(self, state: str, device: str | None) -> int:
        return sum(h.size or 0 for h in self._handles.values()
                   if h.state == state and (device is None or h.device == device))

    def _available(self, device: str) -> int:
        budget = self.budgets.get(device)
        if budget is not None:
            return budget - self._used(DEVICE, device)
        in_flight = sum(h.size or 0 for h in self._handles.values()
                        if h.busy and h.state == DEVICE and h.device == device)  # booked, not yet copied
        return memory_stats(device).free - reserve_bytes(device, self.config) - in_flight

    def _offload_available(self) -> int:
        if self.offload_device is None:
            return 0
        if self.offload_budget is not None:
            return self.offload_budget - self._used(OFFLOAD, None) - self._used(STREAMED, None)
        return ram_stats().free - DEFAULT_RAM_RESERVE

    def _lru(self, state: str, device: str | None, exclude: ModelHandle | None = None) -> list[ModelHandle]:
        found = [h for h in self._handles.values() if h.state == state and not h.pins and h is not exclude
                 and (device is None or h.device == device)]
        return sorted(found, key=lambda h: h.last_used)

    def _make_room(self, device: str, needed: int, exclude: ModelHandle) -> bool:
        """Evict LRU models until ``needed`` bytes are free; evict nothing if that cannot succeed."""
        victims = self._lru(DEVICE, device, exclude)
        if self._available(device) + sum(v.size or 0 for v in victims) < needed:
            return False
        for victim in victims:
            if self._available(device) >= needed:
                break
            self._demote(victim)
        return self._available(device) >= needed

    def _make_offload_room(self, needed: int, exclude: ModelHandle) -> bool:
        if self.offload_device is None:
            return False
        for victim in self._lru(OFFLOAD, None, exclude):
            if self._offload_available() >= needed:
                break
            self._drop(victim)
        return self._offload_available() >= needed

    def _ready(self, handle: ModelHandle) -> None:
        """Plan under the lock, move weights outside it, so one worker's load never stalls the others.

        The handle is pinned (nobody evicts it) and marked busy (other users
        of the same model wait for this load instead of starting a second);
        its target tier is booked before the copy starts, so concurrent plans
        see the memory as taken.
        """
        with self._lock:
            while handle.busy:
                self._changed.wait()
            job = self._plan(handle)
            if job is None:
                return
            handle.busy = True
        try:
            job()
        except BaseException:
            with self._lock:
                self._drop(handle)
            raise
        finally:
            with self._lock:
                handle.busy = False
                self._changed.notify_all()

    def _plan(self, handle: ModelHandle) -> Callable[[], None] | None:
        """Book memory for ``handle`` and return the copy still to do (None: ready already)."""
        if handle.state == DEVICE:
            return None
        if handle.size is None:
            self._measure(handle)
            if handle.state == DEVICE:
                return None
        size = handle.size or 0
        if self.config.vram_mode != "no" and self._make_room(handle.device, size, handle):
            handle.state = DEVICE
            return lambda: self._move(handle, handle.device)
        if handle.state not in (OFFLOAD, STREAMED):
            if not self._make_offload_room(size, handle):
                raise OutOfMemory(f"{handle.key} ({size} bytes) fits neither on {handle.device} "
                                  f"nor in host memory")
            handle.state = STREAMED
            return lambda: (self._move(handle, self.offload_device), self._attach_streamer(handle))
        handle.state = STREAMED
        return lambda: self._attach_streamer(handle)

    @staticmethod
    def _attach_streamer(handle: ModelHandle) -> None:
        if handle.streamer is None:
            handle.streamer = WeightStreamer(handle.model, handle.device)
        handle.streamer.attach()

    def _measure(self, handle: ModelHandle) -> None:
        """Load a model of unknown size where it is cheapest to learn its size."""
        target = self.offload_device or handle.device
        handle.model = handle.loader(target)
        handle.loads += 1
        handle.size = module_size(handle.model)
        handle.state = OFFLOAD if self.offload_device is not None else DEVICE
        if handle.state == OFFLOAD and not self._make_offload_room(0, handle):
            self._drop(handle)

    def _move(self, handle: ModelHandle, device: str | None) -> None:
        """Put the weights on ``device``, loading from the loader if the model is on disk."""
        if handle.streamer is not None:
            handle.streamer.detach()
            handle.streamer = None
        if handle.model is None:
            handle.model = handle.loader(device)
            handle.loads += 1
        else:
            handle.model = handle.model.to(device)

    def _demote(self, handle: ModelHandle) -> None:
        """Evict from the device: to the offload tier if it has room, else to disk."""
        size = handle.size or 0
        if self.offload_device is not None and self._make_offload_room(size, handle):
            self._move(handle, self.offload_device)
            handle.state = OFFLOAD
        else:
            self._drop(handle)

    def _drop(self, handle: ModelHandle) -> None:
        if handle.streamer is not None:
            handle.streamer.detach()
            handle.streamer = None
        handle.model = None
        handle.state = DISK

    @staticmethod
    def _empty_cache(device: str) -> None:
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
