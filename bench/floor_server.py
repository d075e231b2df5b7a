"""The least a ComfyUI-protocol server costs per trivial prompt on this stack: the yardstick for ``--floor``.

Not comfy-kernel: a raw ASGI app on the same uvicorn (httptools, the
websockets protocol without compression) that does only what the protocol
and durability require of any server for one prompt, with no validation,
no graph and no node:

* ``POST /prompt``: read and parse the JSON body, insert the queue row in
  SQLite (WAL, ``synchronous=NORMAL``, one commit), answer the prompt id;
* hand the prompt to a worker thread and back (``--inline``: run it on the
  loop), as a server whose nodes may run for minutes must;
* move the row to history in one transaction, then send the frames a
  trivial primitive prompt sends (14 for the primitive graph, 17 for the
  three-node image graph: status, execution_start, execution_cached, the
  per-node executing / progress_state / executed, execution_success,
  status, executing null), each encoded with orjson.

``bench/prompts.py --floor`` runs it beside the real servers with the same
client; what comfy-kernel costs above it is its own code, what it costs is
the stack's.

    python bench/floor_server.py --port N [--database PATH] [--inline] [--loop auto|asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import sqlite3
import tempfile
import threading
import time
import uuid
from typing import Any

import orjson
import uvicorn


class Floor:
    def __init__(self, database: str, inline: bool):
        self.db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS queue (id TEXT PRIMARY KEY, item BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY, id TEXT, entry BLOB)")
        self.sockets: dict[str, Any] = {}
        self.inline = inline
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.pending = 0
        self.number = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        threading.Thread(target=self._worker, daemon=True).start()

    # -- ASGI --
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            if scope["method"] == "POST" and scope["path"] == "/prompt":
                await self._prompt(receive, send)
            else:
                await _json(send, 200, b"{}")

    async def _websocket(self, scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        sid = query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = send
        await send({"type": "websocket.send", "text": _status(self.pending)})
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            self.sockets.pop(sid, None)

    async def _prompt(self, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        prompt_id = request.get("prompt_id") or str(uuid.uuid4())
        self.db.execute("INSERT INTO queue VALUES (?, ?)", (prompt_id, body))
        number, self.number = self.number, self.number + 1
        self.pending += 1
        client = self.sockets.get(request.get("client_id"))
        if client is not None:
            await client({"type": "websocket.send", "text": _status(self.pending)})
        await _json(send, 200, orjson.dumps({"prompt_id": prompt_id, "number": number, "node_errors": {}}))
        job = (prompt_id, request["prompt"], client)
        if self.inline:
            self.loop.create_task(self._finish(job, _run(job)))
        else:
            self.jobs.put(job)

    def _worker(self) -> None:
        while True:
            job = self.jobs.get()
            frames = _run(job)
            self.loop.call_soon_threadsafe(lambda job=job, frames=frames: self.loop.create_task(
                self._finish(job, frames)))

    async def _finish(self, job: tuple, frames: list[bytes]) -> None:
        prompt_id, prompt, client = job
        entry = orjson.dumps({"prompt": prompt, "outputs": {}, "status": {"status_str": "success"}})
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM queue WHERE id = ?", (prompt_id,))
        self.db.execute("INSERT INTO history (id, entry) VALUES (?, ?)", (prompt_id, entry))
        self.db.execute("COMMIT")
        self.pending -= 1
        if client is None:
            return
        frames += [orjson.dumps({"type": "execution_success", "data": {"prompt_id": prompt_id, "timestamp": _ms()}}),
                   _status(self.pending),
                   orjson.dumps({"type": "executing", "data": {"node": None, "prompt_id": prompt_id}})]
        for frame in frames:
            await client({"type": "websocket.send", "text": frame.decode()})


def _run(job: tuple) -> list[bytes]:
    """The frames of a run, built where a worker would build them (no node runs)."""
    prompt_id, prompt, _client = job
    out = [orjson.dumps({"type": "execution_start", "data": {"prompt_id": prompt_id, "timestamp": _ms()}}),
           orjson.dumps({"type": "execution_cached", "data": {"nodes": [], "prompt_id": prompt_id,
                                                             "timestamp": _ms()}})]
    state: dict[str, Any] = {}
    for node_id in prompt:
        state[node_id] = {"value": 0.0, "max": 1.0, "state": "running", "node_id": node_id, "prompt_id": prompt_id,
                          "display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id}
        out.append(orjson.dumps({"type": "progress_state", "data": {"prompt_id": prompt_id, "nodes": state}}))
        out.append(orjson.dumps({"type": "executing", "data": {"node": node_id, "display_node": node_id,
                                                               "prompt_id": prompt_id}}))
        state[node_id] = {**state[node_id], "value": 1.0, "state": "finished"}
        out.append(orjson.dumps({"type": "progress_state", "data": {"prompt_id": prompt_id, "nodes": state}}))
    last = list(prompt)[-1]
    out.append(orjson.dumps({"type": "executed", "data": {"node": last, "display_node": last,
                                                          "output": {"text": ["5"]}, "prompt_id": prompt_id}}))
    return out


def _status(pending: int) -> str:
    return orjson.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": pending}}}}).decode()


def _ms() -> int:
    return int(time.time() * 1000)


async def _json(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", default=os.path.join(tempfile.mkdtemp(prefix="floor-"), "floor.db"))
    parser.add_argument("--inline", action="store_true", help="run prompts on the server loop, no worker thread")
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                        help="uvicorn's event loop (auto: uvloop when installed, as comfy-kernel's server)")
    args = parser.parse_args()
    uvicorn.run(Floor(args.database, args.inline), host="127.0.0.1", port=args.port, http="httptools", loop=args.loop,
                ws="websockets-sansio", ws_per_message_deflate=False, lifespan="off", log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
