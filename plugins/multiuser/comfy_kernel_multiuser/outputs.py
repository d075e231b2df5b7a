"""Who owns which output file, so ``/view`` serves outputs only to their owners.

ComfyUI keeps every user's results in one ``output`` (and ``temp``) folder
and serves any of them to anyone who names the file, and saved names are
guessable (``ComfyUI_00001_.png``). With ``--auth``, each file a prompt
reports (the ``executed`` UI outputs and the finished prompt's outputs) or an
upload answers is recorded for the owner key of its prompt or request, and
``/view`` of an ``output`` or ``temp`` file is allowed only to a recorded
owner (a workspace's members share it) or an administrator. Unknown files
answer 404, so their existence does not leak. ``input`` stays shared, as
ComfyUI lists it in ``/object_info`` for every loader node.

Nodes that open a file by name (``LoadImage`` with ``"x.png [output]"``) go
through the same rule for the prompt's owner (:func:`node_may_open`, the
``ck_file_access`` hook); a prompt knows only its owner key, so the
administrator exception applies to prompts of an administrator's personal
workspace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from sqlalchemy import bindparam, or_, select
from starlette.requests import HTTPConnection

from comfy_kernel.files.paths import safe_join, split_annotation
from comfy_kernel.identity import Identity

from .context import MultiUser, fail
from .store import files, hot, users

PRIVATE_TYPES = ("output", "temp")
VIEW_PATHS = ("/view", "/api/view")
MAX_REMEMBERED = 200_000

_OWNED = hot(select(files.c.owner).where(files.c.path == bindparam("path"), files.c.owner == bindparam("owner")))
_ADMIN_OWNER = hot(select(users.c.id).where(
    users.c.is_admin == 1, users.c.disabled == 0,
    or_(users.c.personal_workspace_id == bindparam("ws"), users.c.id == bindparam("owner"))).limit(1))


def file_path(mu: MultiUser, filename: str, kind: str | None, subfolder: str | None) -> str | None:
    """The real path ``/view`` would serve for these parameters (the same rules), or None."""
    try:
        bare, annotated = split_annotation(filename)
        if not bare or bare.startswith("/") or ".." in bare or "\x00" in bare:
            return None
        base = mu.kernel.dirs.by_type(annotated or kind or "output")
        if base is None:
            return None
        directory = safe_join(base, subfolder) if subfolder else base
        return os.path.realpath(os.path.join(directory, os.path.basename(bare)))
    except Exception:
        return None


def file_kind(filename: str, kind: str | None) -> str:
    _, annotated = split_annotation(filename)
    return annotated or kind or "output"


def _files_in(value: Any) -> Iterator[dict[str, Any]]:
    """Every ``{"filename", "subfolder", "type"}`` object inside a UI output structure."""
    if isinstance(value, dict):
        if isinstance(value.get("filename"), str):
            yield value
        for item in value.values():
            yield from _files_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _files_in(item)


class Ownership:
    def __init__(self, mu: MultiUser):
        self.mu = mu
        self.recent: dict[str, set[str]] = {}
        self._record = mu.store.db.prepare(
            mu.store.insert(files).values(path=bindparam("path"), owner=bindparam("owner"),
                                          created_at=bindparam("at")).on_conflict_do_nothing())

    def record(self, owner: str | None, output: Any) -> None:
        """Remember the files of one UI output for ``owner`` (synchronous; the write follows)."""
        if not owner:
            return
        from .store import now
        from .tokens import _touch_later

        for item in _files_in(output):
            if file_kind(item["filename"], item.get("type")) not in PRIVATE_TYPES:
                continue
            path = file_path(self.mu, item["filename"], item.get("type"), item.get("subfolder"))
            if path is None:
                continue
            owners = self.recent.setdefault(path, set())
            if owner in owners:
                continue
            owners.add(owner)
            if len(self.recent) > MAX_REMEMBERED:
                self.recent.pop(next(iter(self.recent)))
            _touch_later(self.mu, self._record, {"path": path, "owner": owner, "at": now()})

    def owns(self, identity: Identity, path: str) -> bool:
        return self.owns_key(identity.key, path)

    def owns_key(self, owner: str, path: str) -> bool:
        if owner in self.recent.get(path, ()):
            return True
        return self.mu.store.reads.fetch_one(_OWNED, {"path": path, "owner": owner}) is not None


def node_may_open(mu: MultiUser, owner: str, path: str) -> bool:
    """Whether a node of ``owner``'s prompt may open this output or temp file (what ``/view`` allows)."""
    ownership: Ownership | None = getattr(mu, "ownership", None)
    if ownership is None:
        return False
    if ownership.owns_key(owner, path):
        return True
    workspace = owner[3:] if owner.startswith("ws:") else None
    return mu.store.reads.fetch_one(_ADMIN_OWNER, {"ws": workspace, "owner": owner}) is not None


def check_view(mu: MultiUser, conn: HTTPConnection, identity: Identity) -> None:
    """Refuse ``/view`` of an output or temp file the caller does not own (404, like a missing file)."""
    if conn.scope.get("path") not in VIEW_PATHS or identity.is_admin:
        return
    q = conn.query_params
    filename = q.get("filename")
    if not filename:
        return  # the handler answers the missing parameter
    if file_kind(filename, q.get("type")) not in PRIVATE_TYPES:
        return
    ownership: Ownership | None = getattr(mu, "ownership", None)
    path = file_path(mu, filename, q.get("type"), q.get("subfolder"))
    if ownership is None or path is None or not ownership.owns(identity, path):
        raise fail(404, "not_found", "File not found")


class UploadRecorder:
    """ASGI middleware: an upload into ``output`` or ``temp`` belongs to whoever uploaded it."""

    PATHS = ("/upload/image", "/upload/mask", "/api/upload/image", "/api/upload/mask")

    def __init__(self, app: Any, mu: MultiUser):
        self.app = app
        self.mu = mu

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.PATHS:
            await self.app(scope, receive, send)
            return
        identity = scope.get("state", {}).get("identity")
        status = 0
        chunks: list[bytes] = []

        async def capture(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        ownership = getattr(self.mu, "ownership", None)
        if status != 200 or identity is None or not identity.authenticated or ownership is None:
            return
        try:
            import orjson

            answer = orjson.loads(b"".join(chunks))
            ownership.record(identity.key, {"filename": answer["name"], "subfolder": answer.get("subfolder"),
                                            "type": answer.get("type")})
        except Exception:
            pass  # not the JSON an upload answers: nothing to record
