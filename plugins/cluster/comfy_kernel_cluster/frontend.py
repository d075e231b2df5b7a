"""The front-end role: HTTP and WebSocket here, prompts run on the cluster's workers.

:class:`ClusterExecutor` stands where the in-process queue stands
(``kernel.executor``), so every route, plugin and job feed works unchanged.
It writes each prompt to the shared queue table first, then publishes it on
the work-queue stream; a prompt whose publish failed (NATS down) stays
``pending`` in the table and is published again when the connection comes
back, so nothing accepted is lost. What ``/queue`` shows is the table, read
again whenever a worker or another front-end says the queue changed (and
every second, in case a note was missed). Worker events arrive on
``<p>.out.ev.*`` and go to this front-end's WebSocket clients and job feed.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import logging
import time
from typing import Any

import orjson

from comfy_kernel.execution.queue import Executor, QueuedPrompt

from .claims import Claims
from .subjects import Names, announcements, ensure_stream, reachable, workers_bucket

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class ClusterExecutor(Executor):
    """``kernel.executor`` of ``serve --role api``: a view of the cluster's queue, and its door."""

    def __init__(self, kernel: Any, nats_url: str, names: Names, ack_wait: float):
        super().__init__(kernel)
        self.nats_url = nats_url
        self.names = names
        self.ack_wait = ack_wait
        self.nc: Any = None
        self.js: Any = None
        self.claims = Claims(kernel.database, "front-end", ack_wait)
        self._tasks: list[asyncio.Task] = []
        self._refresh_now = asyncio.Event()
        self._republish_now = asyncio.Event()
        self._kv: Any = None
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()  # recent, newest last
        self.finished_counts: collections.Counter[str] = collections.Counter()  # job status -> prompts seen ending
        self._front_numbers: set[int] = set()  # handed out for front: true (the first one is 0, not negative)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()  # the kernel's database: opened and migrated by Kernel.startup
        await self.claims.open()
        self.jobs.start(asyncio.get_running_loop())
        self.wakeup = asyncio.Condition()
        self._workers_task = None
        loop = asyncio.get_running_loop()
        await self._refresh()
        self._tasks = [loop.create_task(self._refresher())]
        try:
            await self._connect(timeout=2.0)
        except Exception as exc:  # serve anyway: prompts wait in the table until NATS is reachable
            log.warning("NATS at %s is not reachable (%s); queued prompts wait for it", self.nats_url, exc)
            self._tasks.append(loop.create_task(self._connect_later()))
        self.started = True

    async def _connect(self, timeout: float) -> None:
        import nats

        async def reconnected() -> None:
            self._republish_now.set()

        if not await reachable(self.nats_url, timeout):
            raise ConnectionError("no server answers")
        nc = await nats.connect(self.nats_url, name="comfy-kernel front-end", max_reconnect_attempts=-1,
                                reconnect_time_wait=0.5, reconnected_cb=reconnected, connect_timeout=timeout,
                                allow_reconnect=True)
        js = nc.jetstream()
        await ensure_stream(js, self.names, self.ack_wait)
        await nc.subscribe(self.names.out, cb=self._on_out)
        self.nc, self.js = nc, js
        self._republish_now.set()  # prompts accepted while no front-end could publish them
        self._tasks.append(asyncio.get_running_loop().create_task(self._republisher()))

    async def _connect_later(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._connect(timeout=2.0)
                log.info("connected to NATS at %s", self.nats_url)
                return
            except Exception as exc:
                log.debug("NATS still not reachable: %s", exc)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.nc is not None:
            if self.nc.is_connected:
                try:
                    await asyncio.wait_for(self.nc.flush(), 2)
                except Exception:
                    pass
            await self.nc.close()
        await self.claims.close()
        await self.store.close()

    def _ensure_workers(self) -> None:
        """No local workers in this role."""

    def start_workers(self) -> None:
        """No local workers in this role (the warm-up asks)."""

    async def workers_ready(self) -> None:
        return None

    async def wake(self) -> None:
        self.held = False

    # -- queue operations ---------------------------------------------------------------

    def next_number(self, front: bool) -> int:
        number = super().next_number(front)
        if front:
            self._front_numbers.add(number)
        return number

    async def put(self, item: list[Any], owner: str, defs: Any = None) -> None:
        """Queue ``item`` for the cluster's workers (``defs``, validation's, stay here: workers read their own)."""
        self._finished.pop(item[1], None)  # the same id queued again
        await self.store.enqueue(owner, item)
        self.jobs.queued(item[1], owner)
        queued = QueuedPrompt(item, owner)
        heapq.heappush(self.heap, queued)
        self.broadcast_status()
        try:
            if self.js is None:
                raise ConnectionError("not connected to NATS")
            await self._publish_prompt(owner, item, queued.created)
        except Exception as exc:  # kept in the table; published again on reconnect
            log.warning("prompt %s is queued but not yet published (%s)", item[1], exc)
            self._republish_now.set()
        await self._note("queued", {"prompt_id": item[1]})

    async def _publish_prompt(self, owner: str, item: list[Any], created: float) -> None:
        front = _is_front(item) or item[0] in self._front_numbers
        self._front_numbers.discard(item[0])
        client_id = item[3].get("client_id")
        # One id per publish, not per prompt: a prompt id queued again after it ran must not be
        # dropped as a duplicate; the copies a republish makes are dropped by the workers' leases.
        headers = {"Nats-Msg-Id": f"{item[1]}@{created!r}"}
        if self.kernel.ws.client_supports(client_id, "supports_preview_metadata"):
            headers["Ck-Preview-Metadata"] = "1"
        subject = self.names.front_prompts if front else self.names.prompts
        await self.js.publish(subject, _dumps({"owner": owner, "item": item, "created": created}),
                              headers=headers, timeout=5)

    async def delete(self, prompt_ids: list[str] | None, owner: str | None) -> None:
        before = {q.prompt_id for q in self.heap}
        await super().delete(prompt_ids, owner)  # the shared table; a worker drops a deleted prompt it pulls
        removed = sorted(before - {q.prompt_id for q in self.heap})
        await self._note("deleted", {"prompt_ids": removed})

    def interrupt(self, prompt_id: str | None = None) -> None:
        self._command("interrupt", {"prompt_id": prompt_id})

    async def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """POST /free: every worker frees once its running prompt is done."""
        self.flag_free(unload_models, free_memory)

    def flag_free(self, unload_models: bool, free_memory: bool) -> None:
        self._command("free", {"unload_models": unload_models, "free_memory": free_memory})

    def _command(self, name: str, data: dict[str, Any]) -> None:
        """Publish a command to the workers; callable from any thread."""
        if self.nc is None:
            return
        send = self._publish_quietly(f"{self.names.control}.{name}", data)
        try:
            asyncio.get_running_loop().create_task(send)
        except RuntimeError:  # another thread: hand it to the server loop
            loop = self.kernel.loop
            if loop is None:
                send.close()
                return
            loop.call_soon_threadsafe(lambda: loop.create_task(send))

    async def _note(self, change: str, data: dict[str, Any]) -> None:
        await self._publish_quietly(f"{self.names.queue_prefix}.{change}", data)

    async def _publish_quietly(self, subject: str, data: dict[str, Any]) -> None:
        if self.nc is None:
            return
        try:
            await self.nc.publish(subject, _dumps(data))
        except Exception as exc:
            log.debug("could not publish %s: %s", subject, exc)

    async def cluster_workers(self) -> list[dict[str, Any]]:
        """Every worker that announced itself within the announcement lifetime."""
        if self.js is None:
            return []
        if self._kv is None:
            self._kv = await workers_bucket(self.js, self.names)
        return await announcements(self._kv)

    # -- what arrives from the cluster ---------------------------------------------------------

    async def _on_out(self, msg: Any) -> None:
        subject = msg.subject
        if subject.startswith(self.names.queue_prefix):
            change = subject[len(self.names.queue_prefix) + 1:]
            data = orjson.loads(msg.data)
            if change == "queued":
                self._finished.pop(data.get("prompt_id"), None)
            elif change == "deleted":  # end the jobs other front-ends follow (their own end them already)
                for pid in data.get("prompt_ids") or []:
                    log_ = self.jobs.get(pid)
                    if log_ is not None and not log_.done:
                        self.jobs.finish(pid, log_.owner, "cancelled")
            if change == "finished":  # out of the view first: a waiting request reads it once the job ends
                pid = data["prompt_id"]
                self._finished[pid] = None
                while len(self._finished) > 1000:
                    self._finished.popitem(last=False)
                if self.running.pop(pid, None) is None and any(q.prompt_id == pid for q in self.heap):
                    self.heap = [q for q in self.heap if q.prompt_id != pid]
                    heapq.heapify(self.heap)
                self.finished_counts[data.get("status") or "failed"] += 1
                self.jobs.finish(pid, data.get("owner"), data.get("status") or "failed")
            self._refresh_now.set()
            return
        headers = msg.headers or {}
        sid = headers.get("Ck-Client") or None
        prompt_id = headers.get("Ck-Prompt") or None
        kind = headers.get("Ck-Binary")
        if kind is not None:
            if prompt_id:
                self.jobs.record_bytes(prompt_id, int(kind), msg.data)
            self.kernel.ws.send_bytes(int(kind), msg.data, sid)
            return
        event, data = orjson.loads(msg.data)
        if prompt_id:
            self.jobs.record(prompt_id, event, data)
        if sid is not None or headers.get("Ck-Broadcast"):
            self.kernel.ws.send(event, data, sid)

    async def _refresher(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._refresh_now.wait(), REFRESH_SECONDS)
            except TimeoutError:
                pass
            self._refresh_now.clear()
            try:
                await self._refresh()
            except Exception as exc:
                log.debug("queue refresh failed: %s", exc)

    async def _refresh(self) -> None:
        """Read the shared queue table into the heap and the running map."""
        rows = await self.claims.queue_rows()
        heap, running = [], {}
        for owner, blob, state, created in rows:
            item = orjson.loads(blob)
            if item[1] in self._finished:  # a read older than the worker's note
                continue
            queued = QueuedPrompt(item, owner)
            queued.created = created
            if state == "running":
                running[queued.prompt_id] = queued
            else:
                heap.append(queued)
        heapq.heapify(heap)
        before = self.queue_remaining()
        self.heap, self.running = heap, running
        if self.queue_remaining() != before:
            self.broadcast_status()

    async def _republisher(self) -> None:
        while True:
            await self._republish_now.wait()
            self._republish_now.clear()
            try:
                rows = await self.claims.stale()
                for owner, blob in rows:
                    item = orjson.loads(blob)
                    await self._publish_prompt(owner, item, time.time())
                if rows:
                    log.info("published %d queued prompt(s) again", len(rows))
            except Exception as exc:
                log.warning("could not publish the queued prompts again (%s); retrying", exc)
                await asyncio.sleep(1.0)
                self._republish_now.set()


def _is_front(item: list[Any]) -> bool:
    """Queued with ``front: true`` (ComfyUI numbers those below zero)."""
    return isinstance(item[0], (int, float)) and item[0] < 0
