"""Users: the ``users.json`` table, user ids, user roots and ``/users``.

Who is calling comes from ``request.state.identity``, which the kernel fills
from its identity hook (the ``Comfy-User`` header in ``--multi-user`` mode,
or whatever an auth plugin decides). This module only decides whether that
user may use per-user storage and where that storage lives, so an auth
plugin replaces the header without touching any route here.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.files.paths import UnsafePath, check_component, safe_join
from comfy_kernel.http import HTTPError, dumps, json_response, loads, read_json
from comfy_kernel.identity import LOCAL_USER
from comfy_kernel.routing import RouteTable

from .atomic import write_atomic

log = logging.getLogger(__name__)

USERS_FILE = "users.json"
RESERVED_PREFIX = "__"
_UNSAFE_RUN = re.compile(r"[^a-zA-Z0-9_-]+")


def make_user_id(name: str) -> str:
    """ComfyUI's id scheme: the sanitised name, ``_``, then a UUID4."""
    return _UNSAFE_RUN.sub("-", name.strip()) + "_" + str(uuid.uuid4())


def valid_user_id(user_id: str) -> bool:
    """A user id must be one safe path component and not a reserved (``__``) id."""
    if not user_id or user_id.startswith(RESERVED_PREFIX) or user_id.startswith("."):
        return False
    try:
        check_component(user_id)
    except UnsafePath:
        return False
    return True


class Users:
    """The user table and the mapping from a request to its storage root."""

    def __init__(self, user_dir: str, multi_user: bool):
        self.user_dir = os.path.abspath(user_dir)
        self.multi_user = multi_user
        self.table: dict[str, str] = {}
        self._lock = threading.Lock()
        self.load()

    @property
    def users_file(self) -> str:
        return os.path.join(self.user_dir, USERS_FILE)

    def load(self) -> None:
        """Read ``users.json`` once (ComfyUI reads it at start-up only)."""
        try:
            with open(self.users_file, "rb") as f:
                data = loads(f.read())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError):
            log.exception("could not read %s; starting with no users", self.users_file)
            data = {}
        self.table = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def user_of(self, request: Request) -> str | None:
        """The storage user of a request, or None when it may not use per-user storage.

        An identity an auth plugin vouched for is trusted as is. Otherwise in
        single-user mode everyone is the local user, and in multi-user mode
        the claimed id must be in the table (``default`` included: it is not
        implicitly a user there).
        """
        identity = getattr(request.state, "identity", LOCAL_USER)
        user_id = identity.user_id
        if not getattr(identity, "authenticated", False):
            if not self.multi_user:
                return LOCAL_USER.user_id
            if user_id not in self.table:
                return None
        return user_id if valid_user_id(user_id) else None

    def require(self, request: Request, status: int = 403) -> str:
        """:meth:`user_of`, answering ``status`` (401 for settings, 403 otherwise) when unknown."""
        user = self.user_of(request)
        if user is None:
            message = "Unauthorized" if status == 401 else "Invalid user specified in request"
            raise HTTPError(status, message, type="unknown_user")
        return user

    def root(self, user_id: str) -> str:
        """The user's storage directory (not created here: only writes create it)."""
        try:
            return safe_join(self.user_dir, user_id)
        except UnsafePath:
            raise HTTPError(403, "Invalid user specified in request", type="unknown_user") from None

    def create(self, name: str) -> str:
        """Add a user and persist the table; raises ValueError for a duplicate name."""
        with self._lock:
            if name in self.table.values():
                raise ValueError("Duplicate username.")
            user_id = make_user_id(name)
            if not valid_user_id(user_id):
                raise HTTPError(400, "This user name is not allowed", type="invalid_username")
            table = {**self.table, user_id: name.strip()}
            os.makedirs(self.user_dir, exist_ok=True)
            write_atomic(self.users_file, dumps(table))
            self.table = table
            return user_id


def register(routes: RouteTable, users: Users) -> None:
    """``GET /users`` and ``POST /users``."""

    @routes.get("/users")
    async def get_users(request: Request) -> Response:
        if users.multi_user:
            return json_response({"storage": "server", "users": dict(users.table)})
        migrated = os.path.isdir(os.path.join(users.user_dir, LOCAL_USER.user_id))
        return json_response({"storage": "server", "migrated": migrated})

    @routes.post("/users")
    async def post_users(request: Request) -> Response:
        body: Any = await read_json(request, object_only=True)
        name = body.get("username")
        if not isinstance(name, str) or not name.strip():
            raise HTTPError(400, "username is required", type="invalid_username")
        try:
            user_id = users.create(name)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(user_id)
