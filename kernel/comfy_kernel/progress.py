"""Progress, interrupts and the execution context, per prompt.

ComfyUI keeps these as process globals; here each running prompt has a
:class:`RunState` held in a context variable, so several workers can run
prompts at once and every node still reaches *its own* prompt through the
familiar calls:

* ``ProgressBar(total).update(1)`` / ``update_absolute(v, total, preview)``
  → ``progress_state`` + ``progress`` messages and preview frames;
* ``processing_interrupted()`` / ``throw_exception_if_processing_interrupted()``
  → cooperative interrupt checkpoints;
* ``get_executing_context()`` → ``(prompt_id, node_id, list_index)`` of the
  calling node; :class:`CurrentNodeContext` sets it.
* ``get_progress_state()`` → the prompt's :class:`ProgressRegistry`.

Context variables follow asyncio tasks; a thread started by a node must
carry them (``contextvars.copy_context().run``).
"""

from __future__ import annotations

import contextvars
import io
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson


class InterruptProcessingException(Exception):
    """Raised at a checkpoint when the running prompt was interrupted."""


class ExecutionContext(NamedTuple):
    prompt_id: str
    node_id: str
    list_index: int | None


_executing: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "comfy_kernel_executing", default=None)
_run: contextvars.ContextVar[RunState | None] = contextvars.ContextVar("comfy_kernel_run", default=None)


def get_executing_context() -> ExecutionContext | None:
    """``(prompt_id, node_id, list_index)`` of the node running in this context, or None."""
    return _executing.get()


class CurrentNodeContext:
    """``with CurrentNodeContext(prompt_id, node_id, index):`` marks code as that node's."""

    def __init__(self, prompt_id: str, node_id: str, list_index: int | None = None):
        self.context = ExecutionContext(prompt_id, node_id, list_index)
        self._token: contextvars.Token | None = None

    def __enter__(self) -> CurrentNodeContext:
        self._token = _executing.set(self.context)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _executing.reset(self._token)


# --- the per-prompt state --------------------------------------------------------

Sender = Callable[[str, Any, bool], None]
"""``send(event, data, broadcast_without_client)``: route a message for the prompt."""


class RunState:
    """Everything ComfyUI keeps globally about "the prompt now running"."""

    def __init__(self, prompt_id: str, client_id: str | None, send: Sender,
                 send_bytes: Callable[[int, bytes], None] | None = None,
                 supports_metadata: bool = False,
                 node_ids: Callable[[str], tuple[str, str | None, str]] | None = None):
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.send = send
        self.send_bytes = send_bytes or (lambda kind, payload: None)
        self.supports_metadata = supports_metadata
        self.interrupted = threading.Event()
        self.last_node_id: str | None = None
        self.registry = ProgressRegistry(self, node_ids or (lambda n: (n, None, n)))

    def interrupt(self) -> None:
        self.interrupted.set()


def current_run() -> RunState | None:
    return _run.get()


def set_current_run(state: RunState | None) -> contextvars.Token:
    return _run.set(state)


def processing_interrupted() -> bool:
    state = _run.get()
    return bool(state and state.interrupted.is_set())


def throw_exception_if_processing_interrupted() -> None:
    """Interrupt checkpoint: raise (and clear the flag) if this prompt was interrupted."""
    state = _run.get()
    if state is not None and state.interrupted.is_set():
        state.interrupted.clear()
        raise InterruptProcessingException()


def interrupt_current_processing(value: bool = True) -> None:
    state = _run.get()
    if state is not None:
        if value:
            state.interrupted.set()
        else:
            state.interrupted.clear()


def get_progress_state() -> ProgressRegistry | None:
    state = _run.get()
    return state.registry if state is not None else None


# --- the registry and progress_state ----------------------------------------------

SNAPSHOT_FULL_LIMIT = 64
"""Above this many tracked nodes, ``progress_state`` snapshots are throttled to
one per :data:`SNAPSHOT_INTERVAL_S` (a trailing one is always sent): a full
snapshot per transition would make a long chain cost O(nodes²) bytes."""
SNAPSHOT_INTERVAL_S = 0.1


class ProgressRegistry:
    """Per-node ``{state, value, max}`` of one prompt; every change sends a snapshot.

    Each node's JSON is kept pre-serialised, so a snapshot is a byte join
    (an ``orjson.Fragment``), not a re-encoding of every node.
    """

    def __init__(self, run: RunState, node_ids: Callable[[str], tuple[str, str | None, str]]):
        self.run = run
        self.node_ids = node_ids
        self.nodes: dict[str, dict[str, Any]] = {}
        self.handlers: dict[str, Callable[[ProgressRegistry, str], None]] = {}
        self._frags: dict[str, bytes] = {}
        self._last_sent = 0.0
        self._dirty = False
        self._timer = False
        self._lock = threading.Lock()
        self.schedule: Callable[[float, Callable[[], None]], None] | None = None

    def add_handler(self, name: str, handler: Callable[[ProgressRegistry, str], None]) -> None:
        self.handlers[name] = handler

    def remove_handler(self, name: str) -> None:
        self.handlers.pop(name, None)

    def _entry(self, node_id: str) -> dict[str, Any]:
        entry = self.nodes.get(node_id)
        if entry is None:
            display, parent, real = self.node_ids(node_id)
            entry = {"value": 0.0, "max": 1.0, "state": "pending", "node_id": node_id,
                     "prompt_id": self.run.prompt_id, "display_node_id": display,
                     "parent_node_id": parent, "real_node_id": real}
            self.nodes[node_id] = entry
        return entry

    def start_progress(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=0.0, max=1.0)
        self._changed(node_id)

    def update_progress(self, node_id: str, value: float, max_value: float, image: Any = None) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=value, max=max_value)
        self._changed(node_id, force=True)
        if image is not None and self.run.supports_metadata:
            self._send_preview_with_metadata(node_id, image)

    def finish_progress(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._changed(node_id)

    def flush(self) -> None:
        """Send the last snapshot if throttling held it back."""
        with self._lock:
            if self._dirty:
                self._send_snapshot()

    def _changed(self, node_id: str, force: bool = False) -> None:
        for handler in self.handlers.values():
            handler(self, node_id)
        with self._lock:
            self._frags[node_id] = orjson.dumps(node_id) + b":" + orjson.dumps(self.nodes[node_id])
            if len(self._frags) > SNAPSHOT_FULL_LIMIT and not force:
                wait = SNAPSHOT_INTERVAL_S - (time.monotonic() - self._last_sent)
                if wait > 0:
                    self._dirty = True
                    if not self._timer and self.schedule is not None:
                        self._timer = True
                        self.schedule(wait, self._timer_flush)
                    return
            self._send_snapshot()

    def _timer_flush(self) -> None:
        with self._lock:
            self._timer = False
            if self._dirty:
                self._send_snapshot()

    def _send_snapshot(self) -> None:
        self._dirty = False
        self._last_sent = time.monotonic()
        body = b'{"prompt_id":' + orjson.dumps(self.run.prompt_id) + b',"nodes":{' + b",".join(
            self._frags.values()) + b"}}"
        self.run.send("progress_state", orjson.Fragment(body), True)

    def _send_preview_with_metadata(self, node_id: str, image: Any) -> None:
        encoded = encode_preview(image)
        if encoded is None:
            return
        mime, data = encoded
        display, parent, real = self.node_ids(node_id)
        meta = orjson.dumps({"node_id": node_id, "prompt_id": self.run.prompt_id, "display_node_id": display,
                             "parent_node_id": parent, "real_node_id": real, "image_type": mime})
        self.run.send_bytes(4, struct.pack(">I", len(meta)) + meta + data)


def encode_preview(preview: Any) -> tuple[str, bytes] | None:
    """``(format, PIL image, max_size)`` → ``(mime type, encoded bytes)`` (JPEG q95 / PNG level 1)."""
    try:
        fmt, image, max_size = preview
    except (TypeError, ValueError):
        return None
    if max_size:
        from PIL import Image, ImageOps

        image = ImageOps.contain(image, (max_size, max_size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    if str(fmt).upper() == "PNG":
        image.save(buf, format="PNG", compress_level=1)
        return "image/png", buf.getvalue()
    image.save(buf, format="JPEG", quality=95)
    return "image/jpeg", buf.getvalue()


def send_progress_text(text: str, node_id: str) -> None:
    """A text line shown on ``node_id`` in the frontend (binary frame type 3) for the running prompt."""
    state = _run.get()
    if state is None:
        return
    node = str(node_id).encode("utf-8")
    state.send_bytes(3, struct.pack(">I", len(node)) + node + text.encode("utf-8"))


# --- ProgressBar -------------------------------------------------------------------


def default_progress_hook(value: float, total: float, preview: Any, node_id: str | None = None,
                          prompt_id: str | None = None) -> None:
    """The server's ProgressBar hook: checkpoint, registry update, ``progress``, type-1 preview."""
    state = _run.get()
    if state is None:
        return
    ctx = _executing.get()
    if node_id is None:
        node_id = ctx.node_id if ctx is not None else state.last_node_id
    if node_id is None:
        return
    throw_exception_if_processing_interrupted()
    state.registry.update_progress(node_id, value, total, preview)
    state.send("progress", {"value": value, "max": total, "prompt_id": state.prompt_id, "node": node_id}, True)
    if preview is not None and not state.supports_metadata:
        encoded = encode_preview(preview)
        if encoded is not None:
            kind = 2 if encoded[0] == "image/png" else 1
            state.send_bytes(1, struct.pack(">I", kind) + encoded[1])


PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK: Callable[..., None] | None = default_progress_hook


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function: Callable[..., None] | None) -> None:
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    """A node's progress: ``update(1)`` per step, optionally with a preview image."""

    def __init__(self, total: float, node_id: str | None = None):
        self.total = total
        self.current = 0
        self.node_id = node_id
        self.hook = PROGRESS_BAR_HOOK

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


def set_progress(value: float, max_value: float, node_id: str | None = None, preview_image: Any = None) -> None:
    """What ``ComfyAPI.execution.set_progress`` does: registry only (no legacy ``progress``)."""
    state = _run.get()
    ctx = _executing.get()
    node_id = node_id or (ctx.node_id if ctx is not None else None)
    if node_id is None:
        raise ValueError("node_id must be provided if not in executing context")
    if state is None:
        return
    preview = None
    if preview_image is not None:
        preview = preview_image if isinstance(preview_image, tuple) else ("JPEG", _to_pil(preview_image), None)
    state.registry.update_progress(node_id, value, max_value, preview)


def _to_pil(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    arr = image
    if hasattr(arr, "cpu"):
        if arr.ndim == 4:
            arr = arr[0]
        arr = (arr.clamp(0, 1) * 255).byte().cpu().numpy()
    return Image.fromarray(arr)
