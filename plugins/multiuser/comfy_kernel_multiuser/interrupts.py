"""``POST /interrupt`` may only stop the caller's own running prompts.

The executor's route interrupts whatever prompt is named, or every running
prompt when none is, whoever owns it. With ``--auth`` this middleware
answers interrupts itself: it stops the named prompt only when it runs for
the caller's owner key (its workspace), and a bare interrupt stops only the
caller's running prompts. The answer stays ComfyUI's empty 200 either way,
so it does not reveal whether someone else's prompt id is running.
Administrators keep the server-wide behaviour.
"""

from __future__ import annotations

from typing import Any

import orjson

from .context import MultiUser

PATHS = ("/interrupt", "/api/interrupt")


def running_owners(kernel: Any) -> dict[str, str] | None:
    """Running prompt id -> owner key, or None when the executor does not expose it."""
    executor = getattr(kernel, "executor", None)
    running = getattr(executor, "running", None)
    if not isinstance(running, dict):
        return None
    return {str(pid): str(getattr(item, "owner", "")) for pid, item in list(running.items())}


class InterruptGuard:
    def __init__(self, app: Any, mu: MultiUser):
        self.app = app
        self.mu = mu

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        identity = scope.get("state", {}).get("identity") if scope["type"] == "http" else None
        if identity is None or scope.get("method") != "POST" or scope.get("path") not in PATHS \
                or not identity.authenticated or identity.is_admin:
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            data = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            data = {}
        wanted = data.get("prompt_id") if isinstance(data, dict) else None
        owners = running_owners(self.mu.kernel)
        executor = getattr(self.mu.kernel, "executor", None)
        if owners is not None and executor is not None:
            for prompt_id, owner in owners.items():
                if owner == identity.key and (wanted is None or str(wanted) == prompt_id):
                    executor.interrupt(prompt_id)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
