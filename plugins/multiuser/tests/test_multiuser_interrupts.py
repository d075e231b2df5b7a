"""POST /interrupt under --auth stops only the caller's own running prompts."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from comfy_kernel.identity import Identity
from comfy_kernel_multiuser.interrupts import InterruptGuard


class FakeExecutor:
    def __init__(self, running: dict[str, str]):
        self.running = {pid: SimpleNamespace(owner=owner) for pid, owner in running.items()}
        self.interrupted: list[str | None] = []

    def interrupt(self, prompt_id: str | None = None) -> None:
        self.interrupted.append(prompt_id)


async def _call(guard: InterruptGuard, identity: Identity, body: dict | None) -> int:
    sent: list[dict] = []
    payload = orjson.dumps(body) if body is not None else b""
    messages = [{"type": "http.request", "body": payload, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/interrupt", "state": {"identity": identity}}
    await guard(scope, receive, send)
    return sent[0]["status"] if sent else 0


async def test_interrupts_are_scoped_to_the_owner():
    executor = FakeExecutor({"a1": "ws:alice", "b1": "ws:bob"})
    passed: list[str] = []

    async def downstream(scope, receive, send):
        passed.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = InterruptGuard(downstream, SimpleNamespace(kernel=SimpleNamespace(executor=executor)))
    bob = Identity(user_id="bob", workspace_id="bob", authenticated=True)
    assert await _call(guard, bob, {"prompt_id": "a1"}) == 200
    assert executor.interrupted == []  # alice's prompt keeps running
    assert await _call(guard, bob, None) == 200
    assert executor.interrupted == ["b1"]  # a bare interrupt stops bob's own only
    assert await _call(guard, bob, {"prompt_id": "b1"}) == 200
    assert executor.interrupted == ["b1", "b1"]
    admin = Identity(user_id="root", workspace_id="root", authenticated=True, is_admin=True)
    assert await _call(guard, admin, None) == 200 and passed == ["/api/interrupt"]  # the kernel's own route
