"""Every message of a job, kept for server-sent events, waits and webhooks.

The WebSocket delivers a prompt's messages only to the socket that queued it
(or to everyone), once, as they happen. A :class:`JobFeed` keeps them per
job, numbered, so that a reader that arrives late or reconnects can replay
what it missed (``Last-Event-ID``), a request can wait for the job to end,
and observers (webhooks) can follow every job without a socket.

Workers record from their own threads; records are moved to the job logs on
the server loop in batches (one wake-up per batch, as the WebSocket hub
does), so every log is only ever touched on the loop. Binary preview frames
become a ``preview`` message whose image stays in memory under a URL.

Memory is bounded: a log keeps its last :data:`EVENTS_KEPT` messages and
:data:`PREVIEWS_KEPT` previews, and a finished job's log is dropped after
:data:`FINISHED_TTL_S` seconds or when more than :data:`FINISHED_KEPT`
finished logs exist. Readers of a dropped log fall back to the history.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

EVENTS_KEPT = 10_000
PREVIEWS_KEPT = 16
FINISHED_KEPT = 512
FINISHED_TTL_S = 600.0

#: The message that ends every job's stream, as ComfyUI's WebSocket ends a prompt.
FINAL_EVENT = "executing"

Listener = Callable[["JobLog", str, Any], None]


class JobLog:
    """The numbered messages of one job (ids start at 1), its previews, and whether it ended."""

    __slots__ = ("prompt_id", "owner", "events", "first_seq", "previews", "preview_seq", "current_node",
                 "done", "status", "finished_at", "waiters")

    def __init__(self, prompt_id: str, owner: str | None):
        self.prompt_id = prompt_id
        self.owner = owner
        self.events: collections.deque[tuple[int, str, Any]] = collections.deque()
        self.first_seq = 1
        self.previews: collections.OrderedDict[int, tuple[str, bytes]] = collections.OrderedDict()
        self.preview_seq = 0
        self.current_node: str | None = None
        self.done = False
        self.status: str | None = None
        self.finished_at: float | None = None
        self.waiters: set[asyncio.Event] = set()

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.events) - 1

    def after(self, seq: int) -> list[tuple[int, str, Any]]:
        """The kept messages with an id above ``seq`` (all kept ones when ``seq`` is older)."""
        start = max(seq - self.first_seq + 1, 0)
        if start >= len(self.events):
            return []
        if start == 0:
            return list(self.events)
        return list(self.events)[start:]

    def append(self, event: str, data: Any) -> int:
        seq = self.last_seq + 1
        self.events.append((seq, event, data))
        if len(self.events) > EVENTS_KEPT:
            self.events.popleft()
            self.first_seq += 1
        return seq

    def add_preview(self, mime: str, image: bytes) -> int:
        self.preview_seq += 1
        self.previews[self.preview_seq] = (mime, image)
        while len(self.previews) > PREVIEWS_KEPT:
            self.previews.popitem(last=False)
        return self.preview_seq

    def notify(self) -> None:
        for waiter in self.waiters:
            waiter.set()


class JobFeed:
    """The logs of live and recently finished jobs; see the module docstring."""

    def __init__(self) -> None:
        self.logs: dict[str, JobLog] = {}
        self.finished: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.listeners: list[Listener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._incoming: collections.deque[tuple[str, str, Any]] = collections.deque()
        self._wake_scheduled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(log, event, data)`` on the server loop for every message of every job.

        The job's end is the message ``executing`` with ``node: None``; by
        then ``log.done`` is true and ``log.status`` says ``completed``,
        ``failed`` or ``cancelled``. Listeners must return quickly.
        """
        self.listeners.append(listener)

    # -- recording (any thread) -------------------------------------------------------------

    def record(self, prompt_id: str, event: str, data: Any) -> None:
        """Add one JSON message of a job. Thread-safe; keeps each thread's order."""
        self._incoming.append((prompt_id, event, data))
        if threading.get_ident() == self._loop_thread:
            self._move()
            return
        loop = self._loop
        if loop is None or self._wake_scheduled:
            return
        self._wake_scheduled = True
        try:
            loop.call_soon_threadsafe(self._move)
        except RuntimeError:  # the loop closed during shutdown
            pass

    def record_bytes(self, prompt_id: str, kind: int, payload: bytes) -> None:
        """Add a binary WebSocket frame of a job as the JSON message it stands for."""
        parsed = parse_frame(prompt_id, kind, payload)
        if parsed is not None:
            self.record(prompt_id, *parsed)

    # -- on the server loop ------------------------------------------------------------------------

    def _move(self) -> None:
        self._wake_scheduled = False
        touched: dict[str, JobLog] = {}
        incoming = self._incoming
        while incoming:
            prompt_id, event, data = incoming.popleft()
            log = self.logs.get(prompt_id)
            if log is None:
                log = self.logs[prompt_id] = JobLog(prompt_id, None)
            if event == "_preview":
                mime, image, meta = data
                number = log.add_preview(mime, image)
                node = meta.get("node_id") or log.current_node
                data = {**meta, "node_id": node, "display_node_id": meta.get("display_node_id") or node,
                        "prompt_id": prompt_id, "image_type": mime,
                        "url": f"/api/jobs/{prompt_id}/previews/{number}"}
                event = "preview"
            elif event in ("executing", "progress") and isinstance(data, dict) and data.get("node"):
                log.current_node = str(data["node"])
            log.append(event, data)
            touched[prompt_id] = log
            for listener in self.listeners:
                listener(log, event, data)
        for log in touched.values():
            log.notify()

    def get(self, prompt_id: str) -> JobLog | None:
        return self.logs.get(prompt_id)

    def queued(self, prompt_id: str, owner: str | None) -> None:
        """A job entered the queue: start its log (afresh if an old job had the same id)."""
        self._move()
        log = self.logs.get(prompt_id)
        if log is None or log.done:
            self.logs[prompt_id] = JobLog(prompt_id, owner)
            self.finished.pop(prompt_id, None)

    def open(self, prompt_id: str, owner: str | None) -> JobLog:
        """The log of a job known to be queued or running (created if needed)."""
        self._move()
        log = self.logs.get(prompt_id)
        if log is None:
            log = self.logs[prompt_id] = JobLog(prompt_id, owner)
        elif log.owner is None:
            log.owner = owner
        return log

    def finish(self, prompt_id: str, owner: str | None, status: str) -> JobLog:
        """The job ended (its history is written): close its stream with ``executing`` ``node: None``."""
        log = self.open(prompt_id, owner)
        if log.done:
            return log
        log.done = True
        log.status = status
        log.finished_at = time.time()
        data = {"node": None, "prompt_id": prompt_id}
        log.append(FINAL_EVENT, data)
        for listener in self.listeners:
            listener(log, FINAL_EVENT, data)
        log.notify()
        self.finished[prompt_id] = log.finished_at
        self._evict()
        return log

    def _evict(self) -> None:
        now = time.time()
        finished = self.finished
        while finished:
            prompt_id, ended = next(iter(finished.items()))
            if len(finished) <= FINISHED_KEPT and now - ended < FINISHED_TTL_S:
                break
            finished.popitem(last=False)
            log = self.logs.get(prompt_id)
            if log is not None and log.done:
                del self.logs[prompt_id]

    async def wait(self, log: JobLog, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the job to end; True when it has."""
        if log.done:
            return True
        waiter = asyncio.Event()
        log.waiters.add(waiter)
        deadline = time.monotonic() + timeout
        try:
            while not log.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                waiter.clear()
                try:
                    await asyncio.wait_for(waiter.wait(), remaining)
                except TimeoutError:
                    return log.done
            return True
        finally:
            log.waiters.discard(waiter)

    async def follow(self, log: JobLog, after: int, idle: float = 15.0
                     ) -> AsyncIterator[tuple[int, str, Any] | None]:
        """The job's messages after id ``after``, live, until its end; None after ``idle`` quiet seconds."""
        waiter = asyncio.Event()
        log.waiters.add(waiter)
        try:
            while True:
                waiter.clear()
                batch = log.after(after)
                for item in batch:
                    after = item[0]
                    yield item
                if log.done and after >= log.last_seq:
                    return
                if batch:
                    continue
                try:
                    await asyncio.wait_for(waiter.wait(), idle)
                except TimeoutError:
                    yield None
        finally:
            log.waiters.discard(waiter)


def parse_frame(prompt_id: str, kind: int, payload: bytes) -> tuple[str, Any] | None:
    """A binary frame as ``(event, data)``: previews become ``_preview`` records, text ``progress_text``."""
    try:
        if kind == 1:  # PREVIEW_IMAGE: image type (1 JPEG, 2 PNG), image
            (image_type,) = struct.unpack(">I", payload[:4])
            mime = "image/png" if image_type == 2 else "image/jpeg"
            return "_preview", (mime, bytes(payload[4:]), {})
        if kind == 4:  # PREVIEW_IMAGE_WITH_METADATA: metadata length, metadata JSON, image
            (size,) = struct.unpack(">I", payload[:4])
            meta = orjson.loads(payload[4:4 + size])
            mime = str(meta.get("image_type") or "image/jpeg")
            keep = {k: meta[k] for k in ("node_id", "display_node_id", "parent_node_id", "real_node_id") if k in meta}
            return "_preview", (mime, bytes(payload[4 + size:]), keep)
        if kind == 3:  # TEXT: node id length, node id, text
            (size,) = struct.unpack(">I", payload[:4])
            node = payload[4:4 + size].decode("utf-8", "replace")
            return "progress_text", {"nodeId": node, "text": payload[4 + size:].decode("utf-8", "replace"),
                                     "prompt_id": prompt_id}
    except (struct.error, ValueError, orjson.JSONDecodeError):
        return None
    return None
