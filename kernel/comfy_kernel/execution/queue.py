"""The prompt queue and the workers that drain it.

The queue is a min-heap on ``(number, prompt_id)`` held in memory and
mirrored in SQLite (:mod:`.store`) so it survives a crash. One worker per
device (``comfy_kernel.gpu.worker_devices``, or a single CPU worker) runs
prompts on its own thread and asyncio loop; a dispatcher coroutine per
worker, on the server loop, takes the next item, runs it on the worker,
writes history and sends the closing messages. All database access stays on
the server loop.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import logging
import threading
import time
from typing import Any

from .engine import Engine, now_ms
from .jobs import JobFeed
from .nodeclass import NodeDefs
from .store import Store, public_item

log = logging.getLogger(__name__)


class QueuedPrompt:
    """A queue item, its owner, and its stored JSON (encoded once, reused for the history row).

    ``defs`` are the node definitions validation read (in memory only): the
    run reuses them instead of asking every class for its inputs again.
    """

    __slots__ = ("number", "prompt_id", "item", "owner", "created", "blob", "defs")

    def __init__(self, item: list[Any], owner: str, blob: bytes | None = None, defs: NodeDefs | None = None):
        self.defs = defs
        self.number = item[0]
        self.prompt_id = item[1]
        self.item = item
        self.owner = owner
        self.created = time.time()
        self.blob = blob

    def __lt__(self, other: QueuedPrompt) -> bool:
        return (self.number, self.prompt_id) < (other.number, other.prompt_id)


def _count_devices(config: Any) -> list[Any]:
    """The workers' devices (imports torch), then the start-up objects frozen out of the collector's way.

    Modules and node classes never die; freezing them keeps the collector's full
    passes, which otherwise grow with every big prompt, short.
    """
    from .. import gpu

    devices = list(gpu.worker_devices(config))
    gc.collect()
    gc.freeze()
    return devices


class _LocalWorker:
    """Fallback worker when the GPU package is absent: one thread, items one at a time."""

    def __init__(self, run: Any):
        self._run = run
        self._thread: threading.Thread | None = None
        self._queue: Any = None

    async def start(self) -> None:
        import queue as q

        self._queue = q.Queue()
        self._thread = threading.Thread(target=self._loop, name="ck-worker", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None

    def submit(self, item: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((item, loop, fut))
        return fut

    def _loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            item, loop, fut = entry
            try:
                result = self._run(item)
            except BaseException as exc:  # noqa: BLE001
                loop.call_soon_threadsafe(_settle, fut, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, fut, result, None)


def _worker_info(index: int, worker: Any, device: Any) -> dict[str, Any]:
    """Who ran a prompt, as metering reports it: the worker and its device."""
    if device is None:
        return {"id": f"worker-{index}", "type": "cpu", "name": "cpu", "index": None, "device": "cpu"}
    return {"id": getattr(worker, "id", f"worker-{index}"), "type": device.type, "name": device.name,
            "index": device.index, "device": device.torch_device}


def _settle(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class Executor:
    """What ``kernel.executor`` is: the queue, its workers and their engines."""

    def __init__(self, kernel: Any):
        self.kernel = kernel
        self.store = Store(kernel.database, getattr(kernel.config, "history_max_items", 10000) or 10000)
        self.heap: list[QueuedPrompt] = []
        self.running: dict[str, QueuedPrompt] = {}  # prompt id -> item
        self.starting: dict[str, QueuedPrompt] = {}  # taken from the queue, not yet marked running
        self.running_engine: dict[str, Engine] = {}
        self.counter = 0
        self.wakeup: asyncio.Condition | None = None
        self.workers: list[Any] = []
        self.worker_info: list[dict[str, Any]] = []
        self.engines: list[Engine] = []
        self.dispatchers: list[asyncio.Task] = []
        self.flags: dict[str, bool] = {}
        self.held = False  # a queued prompt was held back by ck_prompt_may_start
        self.started = False
        self._workers_task: asyncio.Task | None = None
        self.jobs = JobFeed()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        self.jobs.start(asyncio.get_running_loop())
        self.wakeup = asyncio.Condition()
        requeue, failed = await self.store.recover()
        for owner, item in requeue:
            extra = item[3]
            heapq.heappush(self.heap, QueuedPrompt(item, owner))
            if isinstance(item[0], (int, float)) and item[0] >= self.counter:
                self.counter = int(item[0]) + 1
            del extra
        for owner, item, started in failed:
            msg = ["execution_error", {"prompt_id": item[1], "node_id": None, "node_type": None, "executed": [],
                                       "exception_message": "The server stopped while running this prompt, "
                                                            "twice; it was not run again.\n",
                                       "exception_type": "ServerCrash", "traceback": [], "current_inputs": {},
                                       "current_outputs": [], "timestamp": now_ms()}]
            await self.store.finish(owner, item, {"outputs": {}, "meta": {}, "status": {
                "status_str": "error", "completed": False, "messages": [msg]}}, started, time.time())
        if self.heap:
            self._ensure_workers()
        self.started = True

    def _ensure_workers(self) -> None:
        """Start the workers on first need (a prompt, or the warm-up after start-up)."""
        if self._workers_task is None:
            self._workers_task = asyncio.get_running_loop().create_task(self._start_workers())

    start_workers = _ensure_workers

    async def workers_ready(self) -> None:
        """Wait until every worker is started (the devices are counted)."""
        self._ensure_workers()
        assert self._workers_task is not None
        await asyncio.shield(self._workers_task)

    async def _start_workers(self) -> None:
        """Start the first worker at once, the others when the devices are known.

        The first worker runs on the default device, looked up when a node first
        asks for it; so a prompt that needs no torch does not wait for torch to
        be imported to count the devices. Counting them (a thread) starts the
        workers of the other devices, if any.
        """
        await self._add_worker(None)
        try:
            from .. import gpu

            devices = await asyncio.to_thread(_count_devices, gpu.GpuConfig.from_args(self.kernel.config))
        except Exception as exc:  # the GPU package is optional
            log.debug("no GPU worker devices (%s); using one worker", exc)
            devices = []
        if devices:  # the first worker's default device, now that it is known
            self.worker_info[0] = _worker_info(0, self.workers[0], devices[0])
        for device in devices[1:]:
            await self._add_worker(device)

    async def _add_worker(self, device: Any) -> None:
        engine = Engine(self.kernel, notify_executed=self._notify_executed)
        worker = self._make_worker(device, engine)
        await worker.start()
        self.engines.append(engine)
        self.workers.append(worker)
        self.worker_info.append(_worker_info(len(self.workers) - 1, worker, device))
        self.dispatchers.append(asyncio.get_running_loop().create_task(self._dispatch(len(self.workers) - 1)))

    def _make_worker(self, device: Any, engine: Engine) -> Any:
        def run(queued: QueuedPrompt) -> dict[str, Any]:
            item = queued.item
            return engine.run_prompt(item[1], item[2], item[3], item[4], queued.owner, queued.defs)

        try:
            from ..gpu import ThreadWorker
        except ImportError:
            return _LocalWorker(run)
        return ThreadWorker(device, run, item_id=lambda q: q.prompt_id)

    async def stop(self) -> None:
        task = getattr(self, "_workers_task", None)
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, 30)
            except Exception:
                pass
        for task in self.dispatchers:
            task.cancel()
        for task in self.dispatchers:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for engine in self.engines:
            engine.interrupt()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.stop(), 10)
            except Exception:
                pass
        await self.store.close()

    # -- queue operations (server loop) ---------------------------------------------------

    def next_number(self, front: bool) -> int:
        number = -self.counter if front else self.counter
        self.counter += 1
        return number

    async def put(self, item: list[Any], owner: str, defs: NodeDefs | None = None) -> None:
        """Queue ``item`` durably; ``defs``: the node definitions its validation read, for the run to reuse."""
        self._ensure_workers()
        blob = await self.store.enqueue(owner, item)
        self.jobs.queued(item[1], owner)
        heapq.heappush(self.heap, QueuedPrompt(item, owner, blob, defs))
        self.broadcast_status()
        assert self.wakeup is not None
        async with self.wakeup:
            self.wakeup.notify()

    async def delete(self, prompt_ids: list[str] | None, owner: str | None) -> None:
        before = len(self.heap)
        kept = self.heap
        if prompt_ids is None:
            self.heap = [q for q in self.heap if owner is not None and q.owner != owner]
        else:
            wanted = set(prompt_ids)
            self.heap = [q for q in self.heap if not (q.prompt_id in wanted and (owner is None or q.owner == owner))]
        heapq.heapify(self.heap)
        await self.store.delete_pending(prompt_ids, owner)
        if len(self.heap) != before:
            remaining = {id(q) for q in self.heap}
            for q in kept:
                if id(q) not in remaining:  # a removed job ends its event stream and its waits
                    self.jobs.finish(q.prompt_id, q.owner, "cancelled")
            self.broadcast_status()

    def queue_remaining(self, owner: str | None = None) -> int:
        """Pending plus running prompts, of ``owner`` only when given."""
        if owner is None:
            return len(self.heap) + len(self.running)
        return sum(1 for q in self.heap if q.owner == owner) + \
            sum(1 for q in self.running.values() if q.owner == owner)

    def queue_for(self, owner: str | None) -> tuple[list[list[Any]], list[list[Any]]]:
        taken = [*self.starting.values(), *self.running.values()]
        running = [public_item(q.item) for q in taken if owner is None or q.owner == owner]
        pending = [public_item(q.item) for q in self.heap if owner is None or q.owner == owner]
        return running, pending

    def status(self, prompt_id: str) -> str | None:
        if prompt_id in self.running or prompt_id in self.starting:
            return "running"
        if any(q.prompt_id == prompt_id for q in self.heap):
            return "pending"
        return None

    def interrupt(self, prompt_id: str | None = None) -> None:
        for pid, engine in list(self.running_engine.items()):
            if prompt_id is None or pid == prompt_id:
                engine.interrupt()

    async def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """POST /free: at once when idle, else after the running prompts.

        Dropping gigabytes of weights (and the garbage collection after it)
        takes a while: it runs in a thread so the server keeps answering.
        """
        self.flag_free(unload_models, free_memory)
        if not self.running:
            await asyncio.to_thread(self._apply_free)

    def flag_free(self, unload_models: bool, free_memory: bool) -> None:
        """Ask for models to be unloaded / caches freed after the running prompts (``set_flag``)."""
        if unload_models:
            self.flags["unload_models"] = True
        if free_memory:
            self.flags["free_memory"] = True

    def running_node_for_client(self, sid: str) -> str | None:
        for pid, queued in self.running.items():
            if queued.item[3].get("client_id") == sid:
                engine = self.running_engine.get(pid)
                if engine is not None:
                    return engine.running_display_node()
        return None

    def broadcast_status(self) -> None:
        self.kernel.ws.send_status()

    # -- the dispatcher ---------------------------------------------------------------------

    async def _dispatch(self, index: int) -> None:
        worker, engine = self.workers[index], self.engines[index]
        host = self.kernel.host
        assert self.wakeup is not None
        may_start = self.kernel.host.pm.hook.ck_prompt_may_start
        while True:
            async with self.wakeup:
                while True:
                    queued = self._take(may_start)
                    if queued is not None:
                        break
                    await self.wakeup.wait()
            started = time.time()
            send_final = None
            self.starting[queued.prompt_id] = queued
            try:
                await self.store.mark_running(queued.prompt_id)  # durable before anyone sees it running
                self.running[queued.prompt_id] = queued
                self.starting.pop(queued.prompt_id, None)
                self.running_engine[queued.prompt_id] = engine
                self.broadcast_status()
                try:
                    result = await worker.submit(queued)
                except Exception as exc:
                    log.exception("prompt %s crashed the worker", queued.prompt_id)
                    result = {"outputs": {}, "meta": {}, "status": {"status_str": "error", "completed": False,
                              "messages": [["execution_error", {"prompt_id": queued.prompt_id,
                                                                "exception_message": f"{exc}\n",
                                                                "timestamp": now_ms()}]]}}
                send_final = result.pop("send_final", None)
                ended = time.time()
                await self.store.finish(queued.owner, queued.item, result, started, ended, queued.created,
                                        item_blob=queued.blob)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not record prompt %s", queued.prompt_id)
                result = None
            finally:
                # History first, then the message that ends the run: a client that reads
                # /history/{id} when execution_success arrives finds the prompt there.
                if send_final is not None:
                    send_final()
                self.starting.pop(queued.prompt_id, None)
                self.running.pop(queued.prompt_id, None)
                self.running_engine.pop(queued.prompt_id, None)
            self.broadcast_status()
            client_id = queued.item[3].get("client_id")
            if client_id:
                self.kernel.ws.send("executing", {"node": None, "prompt_id": queued.prompt_id}, client_id)
            log.info("Prompt executed in %.2f seconds", time.time() - started)
            self.jobs.finish(queued.prompt_id, queued.owner, job_status(result))
            if result is not None and host.implemented("ck_prompt_finished"):
                host.call_each("ck_prompt_finished", event={
                    "prompt_id": queued.prompt_id, "owner": queued.owner, "status": result["status"],
                    "outputs": result["outputs"], "prompt": queued.item[2], "extra_data": queued.item[3],
                    "created": queued.created,
                    "started": started, "ended": ended, "worker": self.worker_info[index],
                    "nodes": result.get("nodes") or {}})
            if self.flags and not self.running:
                await asyncio.to_thread(self._apply_free)
            if self.held:
                await self.wake()

    def _take(self, may_start: Any) -> QueuedPrompt | None:
        """The next queued prompt allowed to start (``ck_prompt_may_start``), removed from the heap."""
        heap = self.heap
        if not heap:
            return None
        impls = may_start.get_hookimpls()
        if not impls or self._may_start(impls, heap[0]):
            return heapq.heappop(heap)
        self.held = True
        for queued in sorted(heap)[1:]:  # the first in line is held back: the next allowed one
            if self._may_start(impls, queued):
                heap.remove(queued)
                heapq.heapify(heap)
                return queued
        return None

    def _may_start(self, impls: list[Any], queued: QueuedPrompt) -> bool:
        args = {"event": {"prompt_id": queued.prompt_id, "owner": queued.owner, "extra_data": queued.item[3]},
                "kernel": self.kernel}
        for impl in impls:
            try:
                if impl.function(**{name: args[name] for name in impl.argnames}) is False:
                    return False
            except Exception:
                log.exception("plugin %s failed in ck_prompt_may_start", self.kernel.host.pm.get_name(impl.plugin))
        return True

    async def wake(self) -> None:
        """Let idle workers look at the queue again (a limit that held prompts back changed)."""
        self.held = False
        if self.wakeup is not None:
            async with self.wakeup:
                self.wakeup.notify_all()

    def _apply_free(self) -> None:
        flags, self.flags = self.flags, {}
        if flags.get("unload_models") or flags.get("free_memory"):
            try:
                from .. import gpu

                gpu.model_manager().unload_all()
            except Exception:
                pass
        if flags.get("free_memory"):
            for engine in self.engines:
                engine.free()

    def _notify_executed(self, event: dict[str, Any]) -> None:
        """``ck_node_executed`` on the server loop, batched with the run's messages (no wake-up of its own)."""
        host = self.kernel.host
        if host.implemented("ck_node_executed"):
            self.kernel.ws.call_soon(lambda: host.call_each("ck_node_executed", event=event))


def job_status(result: dict[str, Any] | None) -> str:
    """``completed``, ``failed`` or ``cancelled``, from a history result."""
    status = (result or {}).get("status") or {}
    if status.get("status_str") == "success":
        return "completed"
    for event, _data in status.get("messages") or []:
        if event == "execution_interrupted":
            return "cancelled"
    return "failed"
