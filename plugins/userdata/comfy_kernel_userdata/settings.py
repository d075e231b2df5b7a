"""Per-user frontend settings: ``/settings`` and ``/settings/{id}``.

Stored as ``<user root>/comfy.settings.json`` (4-space indented, flat keys).
ComfyUI loses data in three ways that this module closes:

* concurrent ``POST``s each read, change and write the whole file, so one
  update can overwrite another: here every read-modify-write holds a lock
  (a thread lock within the process and an ``flock`` across processes);
* a crash mid-write truncates the file: writes are atomic (temp + rename);
* a corrupt file reads as ``{}`` and the next write destroys it: here it is
  first copied aside as ``comfy.settings.json.corrupt-<time>``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import HTTPError, empty, json_response, read_json
from comfy_kernel.routing import RouteTable

from .atomic import write_atomic
from .files import decode_segment, raw_tail
from .users import Users

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SETTINGS_FILE = "comfy.settings.json"
_RAW_SETTING = re.compile(r"^(?:/api)?/settings/(?P<rest>.*)$")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Serialise every read-modify-write of one settings file."""
    with _thread_lock(path):
        if fcntl is None:
            yield
            return
        lock_path = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_settings(path: str) -> tuple[dict[str, Any], bool]:
    """The stored settings and whether the file exists but is unreadable as an object."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}, False
    try:
        value = json.loads(raw)
    except ValueError:
        log.error("settings file %s is not valid JSON; treating it as empty", path)
        return {}, True
    if not isinstance(value, dict):
        log.error("settings file %s does not hold a JSON object; treating it as empty", path)
        return {}, True
    return value, False


def update_settings(path: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the stored settings under the lock and write atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with locked(path):
        settings, corrupt = read_settings(path)
        if corrupt:
            backup = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 1_000_000:06d}"
            shutil.copy2(path, backup)
            log.warning("kept the unreadable settings file as %s", backup)
        change(settings)
        write_atomic(path, json.dumps(settings, indent=4).encode())


def register(routes: RouteTable, users: Users) -> None:
    """The settings routes; an unknown user gets 401, as the frontend expects."""

    def settings_path(request: Request) -> str:
        return os.path.join(users.root(users.require(request, 401)), SETTINGS_FILE)

    def setting_id(request: Request) -> str:
        tail = raw_tail(request, _RAW_SETTING)
        if not tail or "/" in tail:
            raise HTTPError(404, "Not found", type="not_found")
        return decode_segment(tail)

    @routes.get("/settings")
    async def get_all(request: Request) -> Response:
        settings, _ = await run_in_threadpool(read_settings, settings_path(request))
        return json_response(settings)

    @routes.post("/settings")
    async def post_all(request: Request) -> Response:
        path = settings_path(request)
        values = await read_json(request, object_only=True)
        await run_in_threadpool(update_settings, path, lambda s: s.update(values))
        return empty()

    @routes.get("/settings/{rest:path}")
    async def get_one(request: Request) -> Response:
        path = settings_path(request)
        key = setting_id(request)
        settings, _ = await run_in_threadpool(read_settings, path)
        return json_response(settings.get(key))

    @routes.post("/settings/{rest:path}")
    async def post_one(request: Request) -> Response:
        path = settings_path(request)
        key = setting_id(request)
        value = await read_json(request)
        await run_in_threadpool(update_settings, path, lambda s: s.__setitem__(key, value))
        return empty()
