"""The message that ends a prompt arrives only once its history row is committed.

A client that reads ``GET /history/{id}`` as soon as ``execution_success``
(or ``execution_error``) arrives must find the prompt there. Another
connection holding the database's write lock now and then makes the
executor's history write wait, which is when a message sent before the
commit would be seen first.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

import pytest

from .execution_helpers import OUT, Client, V

pytestmark = pytest.mark.slow


class LockHolder:
    """Takes the SQLite write lock of the server's database for a few ms, over and over."""

    def __init__(self, path: str, hold: float = 0.02, pause: float = 0.01):
        self.path, self.hold, self.pause = path, hold, pause
        self.stop = threading.Event()
        self.held = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        try:
            while not self.stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                self.held += 1
                time.sleep(self.hold)
                conn.execute("COMMIT")
                time.sleep(self.pause)
        finally:
            conn.close()

    def __enter__(self) -> LockHolder:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(10)


def run_and_read_history(client: Client, prompt: dict[str, Any], final: str) -> tuple[Any, str, dict[str, Any]]:
    """Queue ``prompt``; the moment its ``final`` message arrives, GET its history."""
    r = client.queue(prompt)
    assert r.status_code == 200, r.text
    pid = r.json()["prompt_id"]
    seen = None
    while True:
        raw = client.ws.recv(timeout=30)
        if isinstance(raw, bytes):
            continue
        msg = json.loads(raw)
        data = msg["data"]
        if not isinstance(data, dict) or data.get("prompt_id") != pid:
            continue
        if msg["type"] in ("execution_success", "execution_error") and seen is None:
            assert msg["type"] == final, msg
            h = client.server.get(f"/history/{pid}")
            seen = (h.json(), h.headers.get("X-Prompt-Status"))
        if msg["type"] == "executing" and data.get("node") is None:
            assert seen is not None, "the prompt ended without a final message"
            return pid, seen[1], seen[0]


@pytest.mark.sqlite_file
def test_history_is_readable_when_success_arrives(exec_server, client):
    db = os.path.join(exec_server.base_dir, "user", "comfy-kernel.db")
    with LockHolder(db) as holder:
        for i in range(40):
            pid, status, body = run_and_read_history(client, {"1": V(7000 + i), "2": OUT(["1", 0])},
                                                     "execution_success")
            assert status == "finished", (i, status)
            assert pid in body, (i, body)
            assert body[pid]["status"]["status_str"] == "success"
            assert [m[0] for m in body[pid]["status"]["messages"]][-1] == "execution_success"
            assert body[pid]["outputs"]["2"] == {"text": [str(7000 + i)]}
    assert holder.held > 10  # the lock really was contended


@pytest.mark.sqlite_file
def test_history_is_readable_when_error_arrives(exec_server, client):
    db = os.path.join(exec_server.base_dir, "user", "comfy-kernel.db")
    with LockHolder(db):
        for i in range(10):
            pid, status, body = run_and_read_history(
                client, {"1": {"class_type": "TestError", "inputs": {"value": i}}, "2": OUT(["1", 0])},
                "execution_error")
            assert status == "finished", (i, status)
            assert body[pid]["status"]["status_str"] == "error"


def test_many_prompts_each_in_history_on_success(exec_server, client):
    """Without contention too: every one of many quick prompts is in history when its success arrives."""
    for i in range(150):
        pid, status, body = run_and_read_history(client, {"1": V(9000 + i), "2": OUT(["1", 0])},
                                                 "execution_success")
        assert status == "finished" and pid in body, (i, status, body)
