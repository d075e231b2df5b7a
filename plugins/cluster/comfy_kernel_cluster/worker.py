"""The worker role: ``comfy-kernel worker --nats URL`` runs the workers of one machine, no HTTP.

One pull loop per device (``--workers``/``--cpu`` as for ``serve``) takes
prompts from the work-queue stream one at a time. For each message:

1. take the lease and mark the queue row running (:mod:`.claims`); a
   deleted or finished prompt is acknowledged and dropped, one another live
   worker holds is handed back for later, one that died twice is recorded
   as failed;
2. run it on the device's engine, renewing the lease and telling JetStream
   "in progress" while it runs;
3. write the history row, release the lease, and only then acknowledge the
   message. A worker killed before step 3 leaves an unacknowledged message
   that JetStream redelivers to another worker once ``--ack-wait`` passed.

The worker's ``kernel.ws`` and job feed are :class:`EventPublisher`: what the
engine would send to WebSocket clients goes out on NATS for the front-ends.
Every few seconds the worker announces itself in the ``<p>_workers``
key-value bucket: nodes, devices, free memory, loaded models, what it runs.
SIGTERM drains: the running prompts finish, no new one is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import orjson

from comfy_kernel.execution.engine import Engine, now_ms
from comfy_kernel.execution.queue import job_status
from comfy_kernel.execution.store import Store

from . import affinity
from .claims import DEAD_TWICE, GONE, HELD, RUN, Claims
from .subjects import ANNOUNCE_TTL, Names, announcements, ensure_stream, reachable, workers_bucket

log = logging.getLogger(__name__)


class EventPublisher:
    """``kernel.ws`` and ``executor.jobs`` of a worker: every message goes to NATS, in order.

    The engine records each message in the job feed and then sends it to the
    prompt's client; the two calls are joined into one NATS message (the
    record is held until the next call of the same thread), so a message
    crosses the network once.
    """

    clients: dict[str, Any] = {}

    def __init__(self, names: Names):
        self.names = names
        self.nc: Any = None
        self.handlers: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: collections.deque[tuple[str, bytes, dict[str, str]]] = collections.deque()
        self._wake = asyncio.Event()
        self._local = threading.local()
        self._task: asyncio.Task | None = None
        #: Called with an ``executed`` event's output on the engine's thread before the event is sent.
        self.before_executed: Any = None

    # -- the job feed side ----------------------------------------------------------------

    def record(self, prompt_id: str, event: str, data: Any) -> None:
        """Every message of a prompt comes here first (then to ``send`` when it has a client)."""
        self._flush()
        if event == "executed" and self.before_executed is not None:
            self.before_executed(data.get("output"))  # files in the object store before anyone hears of them
        self._local.held = (prompt_id, "json", event, data)

    def record_bytes(self, prompt_id: str, kind: int, payload: bytes) -> None:
        self._flush()
        self._local.held = (prompt_id, "bytes", kind, payload)

    # -- the WebSocket side ----------------------------------------------------------------

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        prompt_id = self._take("json", event, data)
        headers = {"Ck-Client": sid} if sid is not None else {"Ck-Broadcast": "1"}
        if prompt_id:
            headers["Ck-Prompt"] = prompt_id
        self._push(self.names.events(sid), _dumps([event, data]), headers)

    def send_bytes(self, event_type: int, payload: bytes, sid: str | None = None) -> None:
        prompt_id = self._take("bytes", event_type, payload)
        headers = {"Ck-Binary": str(event_type)}
        if sid is not None:
            headers["Ck-Client"] = sid
        if prompt_id:
            headers["Ck-Prompt"] = prompt_id
        self._push(self.names.events(sid), payload, headers)

    def send_progress_text(self, text: str, node_id: str, sid: str | None = None) -> None:
        import struct

        from comfy_kernel.ws import BinaryEventTypes

        node = node_id.encode("utf-8")
        self.send_bytes(BinaryEventTypes.TEXT, struct.pack(">I", len(node)) + node + text.encode("utf-8"), sid)

    def send_status(self, sid: str | None = None) -> None:
        """Front-ends send their own ``status`` messages, from the shared queue."""

    def call_soon(self, fn: Any) -> None:
        """Run ``fn()`` on the worker's loop after this thread's messages."""
        self._flush()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn)

    def client_supports(self, sid: str | None, flag: str) -> bool:
        return flag == "supports_preview_metadata" and bool(getattr(self._local, "preview_metadata", False))

    def set_preview_metadata(self, value: bool) -> None:
        self._local.preview_metadata = value

    def note(self, change: str, data: dict[str, Any]) -> None:
        """A queue change for the front-ends, in order after this thread's messages."""
        self._flush()
        self._push(f"{self.names.queue_prefix}.{change}", _dumps(data), {})

    def flush_thread(self) -> None:
        """Send the record this thread still holds (end of a prompt)."""
        self._flush()

    def _take(self, kind: str, a: Any, b: Any) -> str | None:
        held = getattr(self._local, "held", None)
        if held is not None and held[1] == kind and held[2] is a and held[3] is b:
            self._local.held = None
            return held[0]
        self._flush()
        return None

    def _flush(self) -> None:
        held = getattr(self._local, "held", None)
        if held is None:
            return
        self._local.held = None
        prompt_id, kind, a, b = held
        if kind == "json":
            self._push(self.names.events(None), _dumps([a, b]), {"Ck-Prompt": prompt_id})
        else:
            self._push(self.names.events(None), b, {"Ck-Prompt": prompt_id, "Ck-Binary": str(a)})

    def _push(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        self._out.append((subject, data, headers))
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass

    # -- lifecycle (what the kernel calls on its hub) ------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._drain())

    async def stop(self) -> None:
        await self.drain_now()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def drain_now(self) -> None:
        while self._out and self.nc is not None:
            subject, data, headers = self._out.popleft()
            try:
                await self.nc.publish(subject, data, headers=headers or None)
            except Exception as exc:  # events are best effort; history is what counts
                log.debug("event not published: %s", exc)

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.drain_now()


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str)


class WorkerRuntime:
    """``kernel.executor`` of ``comfy-kernel worker``: pull, claim, run, record, acknowledge."""

    def __init__(self, kernel: Any, nats_url: str, names: Names, ack_wait: float):
        self.kernel = kernel
        self.nats_url = nats_url
        self.names = names
        self.ack_wait = ack_wait
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # The kernel's database (SQLite on one host, PostgreSQL across hosts), opened and migrated by
        # Kernel.startup before it starts this runtime.
        self.store = Store(kernel.database, getattr(kernel.config, "history_max_items", 10000) or 10000)
        self.claims = Claims(kernel.database, self.id, ack_wait)
        self.events: EventPublisher = kernel.ws
        self.jobs: Any = self.events  # the engine records job messages here
        self.nc: Any = None
        self.js: Any = None
        self.devices: list[Any] = []
        self.workers: list[Any] = []
        self.engines: list[Engine] = []
        self.running: dict[str, dict[str, Any]] = {}  # prompt id -> {"engine", "device", "started"}
        self.tasks: list[asyncio.Task] = []
        self.draining = False
        self.flags: dict[str, bool] = {}
        self.started = False
        self.done = 0
        self.busy_seconds = 0.0  # wall time spent running prompts, summed over devices
        self._kv: Any = None
        self._peers: tuple[float, list[dict[str, Any]]] = (0.0, [])  # (read at, announcements) for affinity

    # -- the parts of the executor interface other code reads -------------------------------

    def queue_remaining(self, owner: str | None = None) -> int:
        return len(self.running)

    def status(self, prompt_id: str) -> str | None:
        return "running" if prompt_id in self.running else None

    def running_node_for_client(self, sid: str) -> str | None:
        return None

    def interrupt(self, prompt_id: str | None = None) -> None:
        for pid, entry in list(self.running.items()):
            if prompt_id is None or pid == prompt_id:
                entry["engine"].interrupt()

    async def wake(self) -> None:
        return None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        import nats

        await self.store.open()
        await self.claims.open()
        while True:  # a worker started before NATS waits for it
            try:
                if not await reachable(self.nats_url):
                    raise ConnectionError("no server answers")
                self.nc = await nats.connect(self.nats_url, name=f"comfy-kernel worker {self.id}",
                                             max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2)
                break
            except Exception as exc:
                log.warning("NATS at %s is not reachable (%s); trying again", self.nats_url, exc)
                await asyncio.sleep(1.0)
        self.events.nc = self.nc
        self.js = self.nc.jetstream()
        await ensure_stream(self.js, self.names, self.ack_wait)
        await self.nc.subscribe(f"{self.names.control}.*", cb=self._on_control)
        await self._start_devices()
        loop = asyncio.get_running_loop()
        for index in range(len(self.workers)):
            self.tasks.append(loop.create_task(self._pull_loop(index)))
        self.tasks.append(loop.create_task(self._announce_loop()))
        self.started = True
        log.info("worker %s: %d device worker(s) pulling from %s", self.id, len(self.workers), self.nats_url)

    async def _start_devices(self) -> None:
        from comfy_kernel import gpu

        devices = list(await asyncio.to_thread(gpu.worker_devices, gpu.GpuConfig.from_args(self.kernel.config)))
        host = self.kernel.host

        def notify_executed(event: dict[str, Any]) -> None:  # ck_node_executed on this worker's loop
            if host.implemented("ck_node_executed"):
                self.events.call_soon(lambda: host.call_each("ck_node_executed", event=event))

        for device in devices:
            engine = Engine(self.kernel, notify_executed=notify_executed)

            def run(entry: dict[str, Any], engine: Engine = engine) -> dict[str, Any]:
                item = entry["item"]
                self.events.set_preview_metadata(entry["preview_metadata"])
                try:
                    return engine.run_prompt(item[1], item[2], item[3], item[4], entry["owner"])
                finally:
                    self.events.flush_thread()

            worker = gpu.ThreadWorker(device, run, item_id=lambda entry: entry["item"][1])
            await worker.start()
            self.devices.append(device)
            self.engines.append(engine)
            self.workers.append(worker)

    async def drain(self) -> None:
        """Take no new prompt; wait for the running ones (SIGTERM)."""
        self.draining = True
        pulls = [t for t in self.tasks[:len(self.workers)] if not t.done()]
        if pulls:
            await asyncio.gather(*pulls, return_exceptions=True)

    async def stop(self) -> None:
        self.draining = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.stop(), 10)
            except Exception:
                pass
        connected = self.nc is not None and self.nc.is_connected  # with NATS down, stop without waiting on it
        if self._kv is not None and connected:
            try:
                await asyncio.wait_for(self._kv.delete(self.id), 2)
            except Exception:
                pass
        if connected:
            await self.events.drain_now()
        if self.nc is not None:
            if connected:
                try:  # not drain(): it waits out an open pull request
                    await asyncio.wait_for(self.nc.flush(), 2)
                except Exception:
                    pass
            await self.nc.close()
        await self.claims.close()
        await self.store.close()

    # -- pulling and running ---------------------------------------------------------------------

    async def _pull_loop(self, index: int) -> None:
        """Take the next prompt of the ``front`` lane if there is one, else of the normal lane."""
        import nats.errors

        normal = inbox = None
        while not self.draining:
            msgs: list[Any] = []
            try:
                if normal is None:
                    normal = await self.js.pull_subscribe(self.names.prompts, durable=self.names.consumer,
                                                          stream=self.names.stream)
                    inbox = await self.nc.subscribe(self.nc.new_inbox())
                first = await self._front_now(inbox)
                msgs = [first] if first is not None else await normal.fetch(1, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("pull failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    await self._handle(index, msg)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("could not handle a queued prompt; it will be delivered again")

    async def _front_now(self, inbox: Any) -> Any:
        """The next message of the front lane, or None at once when it is empty (a no-wait pull).

        nats-py's fetch always waits out its timeout on an empty consumer, which
        would delay every prompt of the normal lane; a no-wait request is
        answered at once, with a 404 status when there is nothing.
        """
        import nats.errors

        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.names.stream}.{self.names.front_consumer}"
        await self.nc.publish(subject, b'{"batch":1,"no_wait":true}', reply=inbox.subject)
        try:
            msg = await inbox.next_msg(timeout=2.0)
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        if msg.headers and msg.headers.get("Status"):  # 404 no messages, 408 request expired
            return None
        return msg

    async def _handle(self, index: int, msg: Any) -> None:
        body = orjson.loads(msg.data)
        item, owner = body["item"], body["owner"]
        prompt_id = str(item[1])
        if prompt_id in self.running:  # redelivered to us while we run it (NATS was away past --ack-wait)
            await msg.nak(delay=self.ack_wait)
            return
        if await self._idle_holder_elsewhere(item[2], msg):  # see affinity: let it take the prompt
            await msg.nak(delay=affinity.DELAY)
            return
        verdict, row = await self.claims.claim(prompt_id)
        if verdict == GONE:
            await msg.ack()
            return
        if verdict == HELD:
            await msg.nak(delay=self.ack_wait)
            return
        assert row is not None
        if verdict == DEAD_TWICE:
            await self._record_crashed(row)
            await msg.ack()
            return
        assert verdict == RUN
        started = row["started"]
        engine, device = self.engines[index], self.devices[index]
        self.running[prompt_id] = {"engine": engine, "device": device, "started": started}
        self.events.note("started", {"prompt_id": prompt_id, "worker": self.id})
        keep_alive = asyncio.get_running_loop().create_task(self._keep_alive(prompt_id, msg))
        entry = {"item": item, "owner": owner,
                 "preview_metadata": (msg.headers or {}).get("Ck-Preview-Metadata") == "1"}
        try:
            try:
                result = await self.workers[index].submit(entry)
            except Exception as exc:
                log.exception("prompt %s crashed the worker", prompt_id)
                result = {"outputs": {}, "meta": {}, "status": {"status_str": "error", "completed": False,
                          "messages": [["execution_error", {"prompt_id": prompt_id, "exception_message": f"{exc}\n",
                                                            "timestamp": now_ms()}]]}}
            ended = time.time()
            send_final = result.pop("send_final", None)
            await self.store.finish(owner, item, result, started, ended, row.get("created") or body.get("created"))
            await self.claims.release(prompt_id)
            if send_final is not None:  # execution_success once the history row exists, as in one process
                send_final()
                self.events.flush_thread()
        finally:
            keep_alive.cancel()
            self.running.pop(prompt_id, None)
        await msg.ack()  # only now: the history row is committed
        self.done += 1
        self.busy_seconds += max(0.0, ended - started)
        asyncio.get_running_loop().create_task(self._announce())  # idle again, and what it now holds
        if self.flags and not self.running:
            await self._apply_free()
        client_id = item[3].get("client_id")
        if client_id:
            self.events.send("executing", {"node": None, "prompt_id": prompt_id}, client_id)
        status = job_status(result)
        self.events.note("finished", {"prompt_id": prompt_id, "owner": owner, "status": status, "worker": self.id})
        log.info("Prompt executed in %.2f seconds", ended - started)
        self.kernel.host.call_each("ck_prompt_finished", event={
            "prompt_id": prompt_id, "owner": owner, "status": result["status"], "outputs": result["outputs"],
            "prompt": item[2], "extra_data": item[3], "created": row.get("created"), "started": started,
            "ended": ended, "worker": self._worker_info(index), "nodes": result.get("nodes") or {}})

    async def _keep_alive(self, prompt_id: str, msg: Any) -> None:
        while True:
            await asyncio.sleep(max(0.2, self.ack_wait / 3))
            try:
                await self.claims.renew(prompt_id)
            except Exception as exc:
                log.debug("lease renewal failed: %s", exc)
            try:
                await msg.in_progress()
            except Exception as exc:
                log.debug("in-progress signal failed: %s", exc)

    async def _record_crashed(self, row: dict[str, Any]) -> None:
        item = row["item"]
        msg = ["execution_error", {"prompt_id": item[1], "node_id": None, "node_type": None, "executed": [],
                                   "exception_message": "The worker stopped while running this prompt, twice; "
                                                        "it was not run again.\n",
                                   "exception_type": "ServerCrash", "traceback": [], "current_inputs": {},
                                   "current_outputs": [], "timestamp": now_ms()}]
        await self.store.finish(row["owner"], item, {"outputs": {}, "meta": {}, "status": {
            "status_str": "error", "completed": False, "messages": [msg]}}, row["started"], time.time(),
            row.get("created"))
        await self.claims.release(item[1])
        self.events.note("finished", {"prompt_id": item[1], "owner": row["owner"], "status": "failed",
                                      "worker": self.id})

    def _worker_info(self, index: int) -> dict[str, Any]:
        device = self.devices[index]
        return {"id": f"{self.id}/{index}", "type": device.type, "name": device.name, "index": device.index,
                "device": device.torch_device}

    # -- control and announcements -------------------------------------------------------------------

    async def _on_control(self, msg: Any) -> None:
        command = msg.subject.rsplit(".", 1)[-1]
        try:
            data = orjson.loads(msg.data) if msg.data else {}
        except orjson.JSONDecodeError:
            return
        if command == "interrupt":
            self.interrupt(data.get("prompt_id"))
        elif command == "free":
            self.flag_free(bool(data.get("unload_models")), bool(data.get("free_memory")))
            if not self.running:
                await self._apply_free()

    def flag_free(self, unload_models: bool, free_memory: bool) -> None:
        """Unload models / drop caches once no prompt runs here (``POST /free``, ``set_flag``)."""
        if unload_models:
            self.flags["unload_models"] = True
        if free_memory:
            self.flags["free_memory"] = True

    async def _apply_free(self) -> None:
        flags, self.flags = self.flags, {}
        if not flags:
            return

        def free() -> None:  # gigabytes of weights: not on the loop
            try:
                from comfy_kernel import gpu

                gpu.model_manager().unload_all()
            except Exception:
                pass
            if flags.get("free_memory"):
                for engine in self.engines:
                    engine.free()

        await asyncio.to_thread(free)

    def announcement(self) -> dict[str, Any]:
        """What this worker can run and what it holds, as the front-ends read it."""
        from comfy_kernel.gpu.devices import memory_stats

        devices = []
        for index, device in enumerate(self.devices):
            try:
                mem = memory_stats(device)
                free, total = mem.free, mem.total
            except Exception:
                free = total = None
            busy = [pid for pid, e in self.running.items() if e["device"] is device]
            devices.append({"index": index, "device": device.torch_device, "type": device.type, "name": device.name,
                            "memory_free": free, "memory_total": total, "running": busy[:1]})
        models = loaded_models()
        from comfy_kernel import __version__

        return {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(), "version": __version__,
                "nodes": sorted(self.kernel.nodes.names()) if hasattr(self.kernel.nodes, "names")
                else sorted(getattr(self.kernel.nodes, "classes", {})),
                "devices": devices, "loaded_models": models, "running": sorted(self.running),
                "draining": self.draining, "done": self.done, "busy_seconds": round(self.busy_seconds, 3),
                "updated": time.time()}

    async def _announce(self) -> None:
        try:
            if self._kv is None:
                self._kv = await workers_bucket(self.js, self.names)
            await self._kv.put(self.id, _dumps(self.announcement()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("announcement failed: %s", exc)

    async def _announce_loop(self) -> None:
        while True:
            await self._announce()
            await asyncio.sleep(ANNOUNCE_TTL / 5)

    async def _idle_holder_elsewhere(self, prompt: Any, msg: Any) -> bool:
        """True when another, idle worker holds more of the prompt's model files (see :mod:`.affinity`)."""
        files = affinity.model_files(prompt) if isinstance(prompt, dict) else set()
        if not files:
            return False
        try:
            delivered = msg.metadata.num_delivered
        except Exception:
            delivered = affinity.TRIES
        if delivered >= affinity.TRIES:
            return False
        read_at, peers = self._peers
        if time.monotonic() - read_at > affinity.DELAY:
            try:
                if self._kv is None:
                    self._kv = await workers_bucket(self.js, self.names)
                peers = await announcements(self._kv)
            except Exception:
                return False
            self._peers = (time.monotonic(), peers)
        return affinity.better_idle_holder(files, loaded_models(), self.id, peers, fresh=ANNOUNCE_TTL) is not None


def loaded_models() -> list[str]:
    """The model manager's keys of the models this process holds in memory (on a device or offloaded)."""
    try:
        from comfy_kernel import gpu

        return [m["key"] for m in gpu.model_manager().stats()["models"] if m["state"] != "unloaded"]
    except Exception:
        return []


def run_worker(args: argparse.Namespace) -> int:
    """The ``worker`` command: load the kernel as ``serve`` does, start the runtime, wait for a signal."""
    from comfy_kernel.cli import setup_logging
    from comfy_kernel.kernel import Kernel

    setup_logging(args.verbose, args.log_stdout)
    if not args.nats:
        log.error("comfy-kernel worker needs --nats URL")
        return 2
    names = Names(args.nats_prefix)
    kernel = Kernel(args)
    try:
        from comfy_kernel.gpu import GpuConfig, configure

        configure(GpuConfig.from_args(args))
    except ImportError:
        pass
    publisher = kernel.ws = EventPublisher(names)  # type: ignore[assignment]
    if getattr(args, "object_store", None):
        from .objectstore import put_outputs

        publisher.before_executed = lambda output: put_outputs(kernel, output)
    kernel.load()
    for record in kernel.host.failed():
        log.warning("plugin %s failed: %s", record.name, record.error)
    runtime = WorkerRuntime(kernel, args.nats, names, args.ack_wait)
    kernel.executor = runtime

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await kernel.startup()
        print(f"worker {runtime.id} ready", flush=True)
        await stop.wait()
        log.info("worker %s draining", runtime.id)
        await runtime.drain()
        await kernel.shutdown()

    asyncio.run(main())
    return 0


__all__ = ["EventPublisher", "WorkerRuntime", "run_worker"]
