"""Client helpers for the executor's end-to-end tests (a real server over HTTP + WebSocket)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any

from comfy_kernel.testing import ServerProcess

PACK = os.path.join(os.path.dirname(os.path.dirname(__file__)), "nodepacks", "testing_nodes")


def install_pack(base: Any) -> None:
    target = os.path.join(str(base), "custom_nodes", "testing_nodes")
    if not os.path.isdir(target):
        shutil.copytree(PACK, target, ignore=shutil.ignore_patterns("__pycache__"))


def start_server(base: Any, *args: str) -> ServerProcess:
    install_pack(base)
    return ServerProcess(base, *args).start()


class RunResult:
    def __init__(self, prompt_id: str, messages: list[tuple[str, Any]]):
        self.prompt_id = prompt_id
        self.messages = messages

    def events(self, kind: str) -> list[Any]:
        return [d for t, d in self.messages if t == kind]

    @property
    def ran(self) -> list[str]:
        return [d["node"] for d in self.events("executing") if d.get("node") is not None]

    @property
    def cached(self) -> list[str]:
        out: list[str] = []
        for d in self.events("execution_cached"):
            out.extend(d["nodes"])
        return out

    @property
    def error(self) -> Any:
        errs = self.events("execution_error")
        return errs[0] if errs else None

    def types(self) -> list[str]:
        return [t for t, _ in self.messages]


class Client:
    """One WebSocket client that queues prompts and collects their messages."""

    def __init__(self, server: ServerProcess, client_id: str | None = None):
        self.server = server
        self.client_id = client_id or uuid.uuid4().hex
        self._ctx = server.ws(self.client_id)
        self.ws = self._ctx.__enter__()
        first = json.loads(self.ws.recv(timeout=10))
        assert first["type"] == "status"
        self.sid = first["data"]["sid"]
        self.binary: list[bytes] = []
        self._stash: dict[str, list[tuple[str, Any]]] = {}

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)

    def queue(self, prompt: dict[str, Any], **body: Any) -> Any:
        return self.server.post("/prompt", json={"prompt": prompt, "client_id": self.client_id, **body})

    def wait(self, prompt_id: str, timeout: float = 30) -> RunResult:
        """Collect ``prompt_id``'s messages up to its final ``executing`` (node None).

        Messages of other prompts are kept for their own ``wait``: with several
        workers a later prompt may finish first.
        """
        messages = self._stash.pop(prompt_id, [])
        if self._finished(messages, prompt_id):
            return RunResult(prompt_id, messages)
        while True:
            raw = self.ws.recv(timeout=timeout)
            if isinstance(raw, bytes):
                self.binary.append(raw)
                continue
            msg = json.loads(raw)
            data = msg["data"]
            if msg["type"] == "status":
                continue
            owner = data.get("prompt_id") if isinstance(data, dict) else None
            if owner not in (None, prompt_id):
                self._stash.setdefault(owner, []).append((msg["type"], data))
                continue
            messages.append((msg["type"], data))
            if self._finished(messages, prompt_id):
                return RunResult(prompt_id, messages)

    @staticmethod
    def _finished(messages: list[tuple[str, Any]], prompt_id: str) -> bool:
        if not messages:
            return False
        kind, data = messages[-1]
        return kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id

    def run(self, prompt: dict[str, Any], **body: Any) -> RunResult:
        r = self.queue(prompt, **body)
        assert r.status_code == 200, r.text
        return self.wait(r.json()["prompt_id"])

    def history(self, prompt_id: str) -> dict[str, Any]:
        return self.server.get(f"/history/{prompt_id}").json()[prompt_id]


def V(value: Any) -> dict[str, Any]:
    """A TestValue node producing ``value``."""
    return {"class_type": "TestValue", "inputs": {"value": value}}


def OUT(source: Any) -> dict[str, Any]:
    """A TestOutput node showing ``source`` as UI text."""
    return {"class_type": "TestOutput", "inputs": {"value": source}}
