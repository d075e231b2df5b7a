"""Workers: one per device, each running prompts on its own device.

Device assignment
    :func:`worker_devices` lists the device of each worker: one per CUDA
    device, or a single CPU (or MPS) worker. ``--workers N`` overrides the
    count: fewer than the devices uses the first N; more shares the devices
    round-robin (``--cpu --workers 2`` gives two CPU workers, for tests).

Current device
    A worker runs its prompt inside :func:`device_scope`, which sets a context
    variable; the model manager and the nodes call :func:`current_device` to
    find where to put models and tensors. Outside any worker it returns the
    default device. Context variables follow asyncio tasks and
    ``asyncio.to_thread``; code that hands work to a thread pool by other means
    must carry the context (``contextvars.copy_context().run``).

The Worker interface
    :class:`Worker` is what the executor talks to, so workers on other
    machines can stand in for local ones. A distributed engine implements:

    - ``device`` / ``info()``: where the worker runs, as a DeviceInfo and as a
      JSON-able dict (``{"id", "device", "type", "index", "busy", ...}``);
    - ``await start()`` / ``await stop()``: acquire and release resources
      (threads, connections); ``stop`` lets the running item finish;
    - ``submit(item) -> Awaitable``: run one queue item (a prompt, opaque to
      the worker) and resolve to its result, or raise its error;
    - ``cancel(item_id) -> bool``: interrupt that item if it is queued or
      running here.

    :class:`ThreadWorker` is the local implementation: one thread per device,
    items run one at a time, inside ``device_scope(device)``.

Integration (the executor side)::

    workers = [ThreadWorker(dev, run_prompt) for dev in worker_devices(config)]
    for w in workers: await w.start()
    ... result = await workers[i].submit(item)
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import inspect
import itertools
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .config import GpuConfig
from .devices import DeviceInfo, discover_devices

_current: contextvars.ContextVar[DeviceInfo | None] = contextvars.ContextVar("comfy_kernel_device", default=None)
_default: DeviceInfo | None = None
_config: GpuConfig | None = None


def set_default_device(device: DeviceInfo | None, config: GpuConfig | None = None) -> None:
    """Set the device :func:`current_device` returns outside a worker.

    None: discover it again on next use, under ``config`` (the flags, so that
    --cpu is honoured) if given. Costs no torch import.
    """
    global _default, _config
    _default = device
    if config is not None:
        _config = config


def current_device() -> DeviceInfo:
    """The device of the worker running the caller; the default device outside workers."""
    global _default
    device = _current.get()
    if device is not None:
        return device
    if _default is None:
        _default = discover_devices(_config)[0]
    return _default


@contextmanager
def device_scope(device: DeviceInfo | None) -> Iterator[DeviceInfo | None]:
    """Make ``device`` the current device for the code in the block (and tasks it starts).

    None: the default device, as outside any worker.
    """
    token = _current.set(device)
    try:
        yield device
    finally:
        _current.reset(token)


def worker_devices(config: GpuConfig | None = None) -> list[DeviceInfo]:
    """The device of each worker to start, in order (the default device first)."""
    config = config or GpuConfig()
    devices = discover_devices(config)
    count = config.workers or len(devices)
    return [devices[i % len(devices)] for i in range(count)]


class Worker(abc.ABC):
    """A place that executes queue items on one device (see the module docstring)."""

    @property
    @abc.abstractmethod
    def device(self) -> DeviceInfo: ...

    @abc.abstractmethod
    def info(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def submit(self, item: Any) -> Awaitable[Any]: ...

    @abc.abstractmethod
    def cancel(self, item_id: Any) -> bool: ...


_ids = itertools.count()


class ThreadWorker(Worker):
    """A local worker: one thread that runs ``run(item)`` for each submitted item, on its device.

    ``run`` may be a plain function or return an awaitable (an async
    executor): the worker thread then runs it on its own event loop, so
    async nodes of one worker never block another worker.

    ``device`` None means the default device, looked up (which may import
    torch) only when something running on the worker asks for it.

    ``cancel(item_id)`` drops a queued item (its awaitable raises
    CancelledError); for the running one it calls ``interrupt(item)`` if
    given, since only the executor knows how to stop a prompt midway.
    ``item_id`` is read from ``item_id(item)`` (default: the item itself).
    """

    def __init__(self, device: DeviceInfo | None, run: Callable[[Any], Any], *,
                 interrupt: Callable[[Any], None] | None = None,
                 item_id: Callable[[Any], Any] = lambda item: item, name: str | None = None) -> None:
        self._device = device
        self._run = run
        self._interrupt = interrupt
        self._item_id = item_id
        self.id = name or f"worker-{next(_ids)}"
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._running: Any = None
        self._cancelled: set[Any] = set()
        self._lock = threading.Lock()
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    @property
    def device(self) -> DeviceInfo:
        return self._device if self._device is not None else current_device()

    def info(self) -> dict[str, Any]:
        device = self.device
        return {"id": self.id, "device": device.torch_device, "type": device.type,
                "index": device.index, "name": device.name,
                "busy": self._running is not None, "queued": self._queue.qsize(),
                "alive": self._thread is not None and self._thread.is_alive()}

    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.id, daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join)

    def submit(self, item: Any) -> Awaitable[Any]:
        if self._thread is None:
            raise RuntimeError(f"{self.id} is not started")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((item, loop, future, contextvars.copy_context()))
        return future

    def cancel(self, item_id: Any) -> bool:
        with self._lock:
            if self._running is not None and self._item_id(self._running) == item_id:
                if self._interrupt is not None:
                    self._interrupt(self._running)
                    return True
                return False
            for entry in list(self._queue.queue):
                if entry is not None and self._item_id(entry[0]) == item_id:
                    self._cancelled.add(id(entry))
                    return True
        return False

    def _loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                if self._thread_loop is not None:
                    self._thread_loop.close()
                    self._thread_loop = None
                return
            item, loop, future, ctx = entry
            with self._lock:
                if id(entry) in self._cancelled:
                    self._cancelled.discard(id(entry))
                    loop.call_soon_threadsafe(_settle, future, None, asyncio.CancelledError())
                    continue
                self._running = item
            result, error = None, None
            try:
                result = ctx.run(self._run_on_device, item)
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting side
                error = exc
            with self._lock:
                self._running = None
            loop.call_soon_threadsafe(_settle, future, result, error)

    def _run_on_device(self, item: Any) -> Any:
        with device_scope(self._device):
            result = self._run(item)
            if inspect.isawaitable(result):
                if self._thread_loop is None:
                    self._thread_loop = asyncio.new_event_loop()
                result = self._thread_loop.run_until_complete(result)
            return result


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    elif exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
