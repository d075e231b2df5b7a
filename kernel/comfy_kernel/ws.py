"""The WebSocket hub at ``/ws``: clients by sid, ordered delivery, binary frames.

Every send goes through one outbound queue drained on the server loop, so a
recipient sees messages in the order they were produced, whichever thread
produced them (executor workers send from their own threads).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from .http import dumps

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import Kernel

log = logging.getLogger(__name__)


#: How long a message from a worker thread may wait for the ones after it (seconds).
THREAD_BATCH_S = 0.004


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class WsClient:
    """One connected socket and its per-connection metadata."""

    def __init__(self, sid: str, socket: WebSocket, identity: Any):
        self.sid = sid
        self.socket = socket
        self.identity = identity
        self.feature_flags: dict[str, Any] = {}
        self.first_message_seen = False

    def supports(self, flag: str) -> bool:
        return bool(self.feature_flags.get(flag, False))


class WsHub:
    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.clients: dict[str, WsClient] = {}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handlers: dict[str, Any] = {}
        self._from_threads: collections.deque = collections.deque()
        self._wake_scheduled = False

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = self._loop.create_task(self._drain())
        for handlers in self.kernel.host.call_each("ck_ws_handlers", kernel=self.kernel):
            if handlers:
                self.handlers.update(handlers)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for client in list(self.clients.values()):
            try:
                await client.socket.close()
            except Exception:
                pass
        self.clients.clear()

    # --- sending ---------------------------------------------------------------

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        """Queue a JSON message for ``sid`` (or every socket when None). Thread-safe."""
        self._enqueue(("json", event, data, sid))

    def send_status(self, sid: str | None = None) -> None:
        """Queue a ``status`` message; each socket gets its own identity's ``queue_remaining``. Thread-safe."""
        self._enqueue(("status", None, None, sid))

    def status_message(self, identity: Any) -> str:
        return dumps({"type": "status", "data": {"status": {"exec_info": {
            "queue_remaining": self.kernel.queue_remaining(identity)}}}}).decode()

    def send_bytes(self, event_type: int, payload: bytes, sid: str | None = None) -> None:
        """Queue a binary frame: 4-byte big-endian type, then ``payload``. Thread-safe."""
        self._enqueue(("bytes", event_type, payload, sid))

    def call_soon(self, fn: Any) -> None:
        """Run ``fn()`` on the server loop after the messages queued before it. Thread-safe.

        From a worker thread this rides the same batch as the run's messages,
        so it costs no loop wake-up of its own.
        """
        self._enqueue(("call", fn, None, None))

    def send_progress_text(self, text: str, node_id: str, sid: str | None = None) -> None:
        node = node_id.encode("utf-8")
        self.send_bytes(BinaryEventTypes.TEXT, struct.pack(">I", len(node)) + node + text.encode("utf-8"), sid)

    def client_supports(self, sid: str | None, flag: str) -> bool:
        client = self.clients.get(sid) if sid else None
        return bool(client and client.supports(flag))

    def _enqueue(self, item: tuple) -> None:
        loop, queue = self._loop, self._queue
        if loop is None or queue is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            if self._from_threads:  # what workers queued before goes first
                self._move_from_threads()
            queue.put_nowait(item)
            return
        # Other threads (executor workers) batch their messages: the first one of a
        # batch sets a timer on the loop, which sends everything queued by then.
        # One short loop wake-up per batch, and the worker runs undisturbed
        # meanwhile: a quick prompt's messages go out together, and a long one's
        # thousands do not ping-pong the GIL between the two threads.
        self._from_threads.append(item)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                loop.call_soon_threadsafe(self._arm)
            except RuntimeError:
                pass  # loop closed during shutdown

    def _arm(self) -> None:
        assert self._loop is not None
        self._loop.call_later(THREAD_BATCH_S, self._move_from_threads)

    def _move_from_threads(self) -> None:
        self._wake_scheduled = False  # before draining: a message appended after this wakes us again
        queue, pending = self._queue, self._from_threads
        assert queue is not None
        while pending:
            queue.put_nowait(pending.popleft())

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            kind, a, b, sid = await self._queue.get()
            if kind == "call":
                try:
                    a()
                except Exception:
                    log.exception("callback from a worker failed")
                continue
            if kind == "json":
                frame: Any = dumps({"type": a, "data": b}).decode()
            elif kind == "status":
                frame = None
                per_owner: dict[Any, str] = {}
            else:
                frame = struct.pack(">I", a) + b
            if sid is None:
                targets = list(self.clients.values())
            else:
                client = self.clients.get(sid)
                targets = [client] if client else []
            for client in targets:
                try:
                    if frame is None:
                        owner = client.identity.key if getattr(client.identity, "authenticated", False) else None
                        text = per_owner.get(owner)
                        if text is None:
                            text = per_owner[owner] = self.status_message(client.identity)
                        await client.socket.send_text(text)
                    elif isinstance(frame, str):
                        await client.socket.send_text(frame)
                    else:
                        await client.socket.send_bytes(frame)
                except Exception as exc:  # a closed socket must not stop delivery
                    log.debug("ws send to %s failed: %s", client.sid, exc)

    # --- the endpoint ---------------------------------------------------------

    async def endpoint(self, socket: WebSocket) -> None:
        identity = socket.scope.get("state", {}).get("identity")
        client_id = socket.query_params.get("clientId") or ""
        sid = client_id if client_id else uuid.uuid4().hex
        await socket.accept()
        client = WsClient(sid, socket, identity)
        self.clients[sid] = client
        try:
            await socket.send_text(dumps({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": self.kernel.queue_remaining(identity)}},
                "sid": sid}}).decode())
            executor = self.kernel.executor
            running = executor.running_node_for_client(sid) if executor is not None else None
            if running is not None:
                await socket.send_text(dumps({"type": "executing", "data": {"node": running}}).decode())
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    continue
                await self._on_text(client, text)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("websocket %s failed", sid)
        finally:
            # Only unregister if this socket is still the one under that sid.
            if self.clients.get(sid) is client:
                del self.clients[sid]

    async def _on_text(self, client: WsClient, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            log.warning("invalid JSON from websocket %s", client.sid)
            return
        if not isinstance(message, dict):
            client.first_message_seen = True
            return
        kind = message.get("type")
        data = message.get("data", {})
        if not client.first_message_seen:
            client.first_message_seen = True
            if kind == "feature_flags":
                client.feature_flags = data if isinstance(data, dict) else {}
                await client.socket.send_text(
                    dumps({"type": "feature_flags", "data": self.kernel.feature_flags()}).decode())
                return
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            try:
                await handler(client, data)
            except Exception:
                log.exception("ws handler for %s failed", kind)
