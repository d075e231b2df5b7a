"""Fixtures: real servers started with ``--auth``, users signed in over HTTP.

Every server here runs with all installed plugins, so the enforcement tests
see the whole route table the way a deployment would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from comfy_kernel.storage import is_postgres_url
from comfy_kernel.testing import TEST_POSTGRES, ServerProcess, run_sql, server_database

ADMIN = ("admin", "admin-password-1")
SECRETS_KEY = Fernet.generate_key().decode()


def cli(base: Any, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run ``comfy-kernel`` against a base directory (same database as a server on it)."""
    env = dict(os.environ)
    if os.environ.get(TEST_POSTGRES):  # the PostgreSQL run: the database a server on ``base`` uses
        env["COMFY_KERNEL_DATABASE"] = server_database(base)
    return subprocess.run([sys.executable, "-m", "comfy_kernel.cli", *args, "--base-directory", str(base)],
                          input=stdin, capture_output=True, text=True, timeout=120, cwd=str(base), env=env)


def database_text(base: Any) -> str:
    """Every row of every table in the database of a server on ``base``, as text: what a stolen copy shows."""
    target = server_database(base)
    if is_postgres_url(target):
        tables = run_sql(target, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        tables = run_sql(target, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return "\n".join(f"{name}: {run_sql(target, f'SELECT * FROM {name}')!r}" for (name,) in tables)


def create_admin(base: Any, username: str = ADMIN[0], password: str = ADMIN[1]) -> str:
    os.makedirs(base, exist_ok=True)
    done = cli(base, "users", "create", "--admin", "--username", username, "--password-stdin",
               stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class User:
    """One signed-in user: its own cookie jar plus the CSRF token the session came with."""

    def __init__(self, server: ServerProcess, username: str, password: str):
        self.server = server
        self.username = username
        self.password = password
        self.client = httpx.Client(base_url=server.url, timeout=60.0)
        r = self.client.post("/api/auth/session", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        self.client.headers["X-CSRF-Token"] = self.csrf
        me = self.client.get("/api/user").json()
        self.id: str = me["id"]
        self.workspace_id: str = me["workspace_id"]
        self._key: str | None = None

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.patch(path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.delete(path, **kw)

    def api_key(self) -> str:
        if self._key is None:
            r = self.post("/api/workspace/api-keys", json={"name": "tests"})
            assert r.status_code == 201, r.text
            self._key = r.json()["key"]
        return self._key

    def close(self) -> None:
        self.client.close()


class AuthServer:
    """A running ``--auth`` server, its administrator, and a factory of further users."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.url = server.url
        self.admin = User(server, *ADMIN)
        self.users: list[User] = [self.admin]
        self._n = 0

    def new_user(self, prefix: str = "user", **fields: Any) -> User:
        self._n += 1
        username = f"{prefix}{self._n}"
        password = f"pw-{username}-secret"
        r = self.admin.post("/api/users", json={"username": username, "password": password, **fields})
        assert r.status_code == 200, r.text
        user = User(self.server, username, password)
        self.users.append(user)
        return user

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0)

    def log(self) -> str:
        return self.server.log()

    def close(self) -> None:
        for user in self.users:
            user.close()


def start_auth_server(base: Any, *args: str, admin: bool = True, env: dict[str, str] | None = None
                      ) -> ServerProcess:
    if admin:
        create_admin(base)
    environment = {"COMFY_KERNEL_SECRETS_KEY": SECRETS_KEY, **(env or {})}
    return ServerProcess(base, "--auth", *args, env=environment).start()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request, tmp_path):
    """The kernel's database with the kernel's and this plugin's tables, on each back-end."""
    from comfy_kernel.migrations import KERNEL
    from comfy_kernel.storage import connect, upgrade
    from comfy_kernel_multiuser.migrations import MULTIUSER

    target = str(tmp_path / "k.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = connect(target)
    await db.open()
    await upgrade(db, [KERNEL, MULTIUSER])
    yield db
    await db.close()


@pytest.fixture(scope="module")
def auth(tmp_path_factory) -> Iterator[AuthServer]:
    """One ``--auth`` server per test module, with generous rate limits."""
    base = tmp_path_factory.mktemp("auth-server")
    server = start_auth_server(base, "--auth-rate-limit", "10000", "--auth-max-failures", "1000")
    wrapped = AuthServer(server)
    try:
        yield wrapped
    finally:
        wrapped.close()
        server.stop()
        server.client.close()


@pytest.fixture
def make_auth_server(tmp_path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(*args: str, admin: bool = True, base: Any = None, env: dict[str, str] | None = None
             ) -> ServerProcess:
        server = start_auth_server(base or tmp_path / f"base{len(started)}", *args, admin=admin, env=env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
        server.client.close()


def setup_token(log: str) -> str:
    match = re.search(r"/auth/setup#token=([A-Za-z0-9_-]+)", log)
    assert match, log
    return match.group(1)
