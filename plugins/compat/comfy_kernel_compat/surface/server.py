"""ComfyUI's ``server`` module: ``PromptServer.instance`` on the kernel.

Packs use the instance for three things: declaring HTTP routes at import
time (recorded, then served by the kernel; see :mod:`comfy_kernel_compat.web`),
sending WebSocket messages (the kernel's hub), and reading what is running
now (``client_id``, ``last_node_id``, ``last_prompt_id``). The "running now"
values come from the execution context of the calling thread, so with
several workers each node sees its own prompt; outside any node they fall
back to the last values the executor reported.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from comfy_kernel import progress as _progress
from comfy_kernel.ws import BinaryEventTypes
from comfy_kernel_compat import state
from comfy_kernel_compat.web import PACK_ROUTES, CompatApp

log = logging.getLogger("server")


class _PromptQueue:
    """``PromptServer.instance.prompt_queue``: read-only views of the kernel's queue."""

    def _executor(self) -> Any:
        kernel = state.kernel()
        return kernel.executor if kernel is not None else None

    def get_tasks_remaining(self) -> int:
        executor = self._executor()
        return executor.queue_remaining() if executor is not None else 0

    def get_current_queue(self) -> tuple[list[Any], list[Any]]:
        executor = self._executor()
        return executor.queue_for(None) if executor is not None else ([], [])

    get_current_queue_volatile = get_current_queue

    def set_flag(self, name: str, data: Any) -> None:
        """``unload_models``/``free_memory`` as ``POST /free`` sets them, applied after the running prompts."""
        executor = self._executor()
        if executor is not None:
            executor.flag_free(name == "unload_models", name == "free_memory")


class PromptServer:
    """The single server object packs reach as ``PromptServer.instance``."""

    instance: PromptServer

    def __init__(self) -> None:
        self.routes = PACK_ROUTES
        self.app = CompatApp(PACK_ROUTES)
        self.prompt_queue = _PromptQueue()
        self.supports = ["custom_nodes_from_web"]
        self.on_prompt_handlers: list[Any] = []
        self.number = 0
        self._last_client_id: str | None = None
        self._last_node_id: str | None = None
        self._last_prompt_id: str | None = None
        PromptServer.instance = self

    # -- what is running ---------------------------------------------------------------------

    @property
    def client_id(self) -> str | None:
        run = _progress.current_run()
        return run.client_id if run is not None else self._last_client_id

    @client_id.setter
    def client_id(self, value: str | None) -> None:
        self._last_client_id = value

    @property
    def last_node_id(self) -> str | None:
        ctx = _progress.get_executing_context()
        if ctx is not None:
            return ctx.node_id
        run = _progress.current_run()
        if run is not None and run.last_node_id is not None:
            return run.last_node_id
        return self._last_node_id

    @last_node_id.setter
    def last_node_id(self, value: str | None) -> None:
        self._last_node_id = value

    @property
    def last_prompt_id(self) -> str | None:
        run = _progress.current_run()
        return run.prompt_id if run is not None else self._last_prompt_id

    @last_prompt_id.setter
    def last_prompt_id(self, value: str | None) -> None:
        self._last_prompt_id = value

    # -- server objects ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        kernel = state.kernel()
        return kernel.loop if kernel is not None else None

    @property
    def sockets(self) -> dict[str, Any]:
        """``sid → socket`` of the connected WebSocket clients."""
        kernel = state.kernel()
        if kernel is None:
            return {}
        return {sid: client.socket for sid, client in kernel.ws.clients.items()}

    @property
    def sockets_metadata(self) -> dict[str, Any]:
        kernel = state.kernel()
        if kernel is None:
            return {}
        return {sid: {"feature_flags": dict(c.feature_flags)} for sid, c in kernel.ws.clients.items()}

    # -- sending ------------------------------------------------------------------------------

    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        """Queue a message from any thread; ``event`` is a type name or a BinaryEventTypes value."""
        kernel = state.kernel()
        if kernel is None:
            return
        if isinstance(event, int):
            payload = self._binary_payload(event, data)
            if payload is not None:
                kernel.ws.send_bytes(event, payload, sid)
            return
        kernel.ws.send(event, data, sid)

    async def send(self, event: str | int, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def send_progress_text(self, text: str, node_id: str, sid: str | None = None) -> None:
        kernel = state.kernel()
        if kernel is not None:
            kernel.ws.send_progress_text(text, str(node_id), sid)

    @staticmethod
    def _binary_payload(event: int, data: Any) -> bytes | None:
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        if event == BinaryEventTypes.PREVIEW_IMAGE:
            encoded = _progress.encode_preview(data)
            if encoded is None:
                return None
            kind = 2 if encoded[0] == "image/png" else 1
            return struct.pack(">I", kind) + encoded[1]
        log.warning("send_sync: cannot encode binary event %s from %s", event, type(data).__name__)
        return None

    # -- queue and prompt hooks ---------------------------------------------------------------

    def get_queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.prompt_queue.get_tasks_remaining()}}

    def queue_updated(self) -> None:
        self.send_sync("status", {"status": self.get_queue_info()})

    def add_on_prompt_handler(self, handler: Any) -> None:
        """``handler(json_data) -> json_data`` runs on every ``POST /prompt`` body before validation."""
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: dict[str, Any]) -> dict[str, Any]:
        for handler in self.on_prompt_handlers:
            try:
                result = handler(json_data)
                if result is not None:
                    json_data = result
            except Exception:
                log.exception("an on_prompt handler raised; it is skipped")
        return json_data


PromptServer()


def _register_hooks() -> None:
    from comfy_kernel_compat import server_hooks

    server_hooks.register(state.kernel())


_register_hooks()

__all__ = ["PromptServer", "BinaryEventTypes"]


def __getattr__(name: str) -> Any:
    """``server.web`` is aiohttp's ``web`` module, as ComfyUI's server module imported it (loaded on first use)."""
    if name == "web":
        from aiohttp import web

        return web
    raise AttributeError(f"module 'server' has no attribute {name!r}")
