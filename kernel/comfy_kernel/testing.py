"""Helpers for end-to-end tests: a real server process on 127.0.0.1.

Used by the kernel's and the plugins' tests alike::

    with ServerProcess(tmp_path) as server:
        r = server.get("/api/system_stats")
        with server.ws(client_id="abc") as ws:
            ...

The process is ``python -m comfy_kernel.cli serve`` with its own base
directory; it is stopped with SIGTERM (then SIGKILL) by its PID only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TEST_POSTGRES = "CK_TEST_POSTGRES"
"""Set (to a PostgreSQL server's URL) by the test suite's PostgreSQL run: every server a test starts keeps its
state there, in a database of its own named after its base directory (a restart finds it again)."""


def database_for(server_url: str, base_dir: str) -> str:
    """The database (created when missing) that the server with ``base_dir`` uses on ``server_url``."""
    import hashlib
    from urllib.parse import urlsplit

    parts = urlsplit(server_url)
    name = "s_" + hashlib.sha1(os.path.abspath(base_dir).encode()).hexdigest()[:20]
    bindir = _postgres_bindir()
    psql = [os.path.join(bindir or "", "psql") if bindir else "psql", "-h", parts.hostname or "127.0.0.1",
            "-p", str(parts.port or 5432), "-U", parts.username or "ck", "-d", "postgres", "-qtA"]
    found = subprocess.run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname='{name}'"],
                           capture_output=True, text=True, check=True)
    if found.stdout.strip() != "1":
        subprocess.run([*psql, "-c", f'CREATE DATABASE "{name}"'], capture_output=True, check=True)
    return parts._replace(path=f"/{name}").geturl()


def server_database(base_dir: Any) -> str:
    """The database a test server with ``base_dir`` uses: its SQLite file, or its PostgreSQL database."""
    server = os.environ.get(TEST_POSTGRES)
    if server:
        return database_for(server, str(base_dir))
    return os.path.join(str(base_dir), "user", "comfy-kernel.db")


def sqlite_schema(path: str, table_prefix: str, foreign_columns: slice = slice(None)) -> dict[str, object]:
    """Columns (affinity, not-null, default, key), indexes and foreign keys of the tables named
    ``table_prefix...`` in a SQLite file, as SQLite reports them: a migrated file and one a plugin made
    itself compare equal when their schemas are the same. ``foreign_columns`` picks the parts of
    ``PRAGMA foreign_key_list`` rows compared.

    Key columns count as NOT NULL: new files say so, old ones let SQLite's
    quirk (NULL in a non-integer key) stand, and no statement writes one.
    """
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        out: dict[str, object] = {}
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE ?",
                                            (table_prefix + "%",))]
        for name in names:
            columns = [(c[1], "REAL" if c[2] == "DOUBLE" else c[2], bool(c[3] or c[5]),
                        str(c[4]).strip("'") if c[4] else None, c[5])
                       for c in conn.execute(f"PRAGMA table_info({name})")]
            indexes = sorted(
                ("" if i[1].startswith("sqlite_autoindex") else i[1], i[2], i[3], i[4],
                 tuple((x[2], x[4]) for x in conn.execute(f"PRAGMA index_xinfo({i[1]})") if x[5]))
                for i in conn.execute(f"PRAGMA index_list({name})"))
            foreign = sorted(tuple(f)[foreign_columns] for f in conn.execute(f"PRAGMA foreign_key_list({name})"))
            out[name] = (columns, indexes, foreign)
        return out
    finally:
        conn.close()


def run_sql(target: str, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
    """Run one SQL statement (``:name`` parameters) on ``target`` outside any server; returns its rows."""
    import asyncio

    from sqlalchemy import text

    from .storage import connect

    async def run() -> list[tuple]:
        db = connect(target)
        await db.open()
        try:
            stmt = text(sql)
            if stmt.text.lstrip().upper().startswith("SELECT"):
                return await db.fetch_all(stmt, params)
            await db.execute(stmt, params)
            return []
        finally:
            await db.close()

    return asyncio.run(run())


class ServerProcess:
    def __init__(self, base_dir: Any, *args: str, env: dict[str, str] | None = None,
                 startup_timeout: float = 60.0, port: int | None = None, warmup: bool = False):
        self.base_dir = str(base_dir)
        self.args = list(args)
        # The background warm-up imports torch in every server; tests that do not
        # measure it run without (a test can still pass warmup=True or its own env).
        self.env = {**({} if warmup else {"COMFY_KERNEL_NO_WARMUP": "1"}), **(env or {})}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60.0)
        self.log_path = os.path.join(self.base_dir, "server.log")

    def start(self) -> ServerProcess:
        os.makedirs(self.base_dir, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        server = os.environ.get(TEST_POSTGRES)
        if server and "--database" not in self.args and "COMFY_KERNEL_DATABASE" not in self.env:
            env["COMFY_KERNEL_DATABASE"] = database_for(server, self.base_dir)
        cmd = [sys.executable, "-m", "comfy_kernel.cli", "serve", "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", self.base_dir, *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.base_dir, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.client.get("/system_stats", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server did not start in {self.startup_timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, kill: bool = False) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.proc = None
        with contextlib.suppress(Exception):
            self._log.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(kill=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.client.close()

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, **kw)

    @contextlib.contextmanager
    def ws(self, client_id: str | None = None, **kw: Any) -> Iterator[Any]:
        """A synchronous WebSocket client (``websockets.sync``)."""
        from websockets.sync.client import connect

        url = f"ws://127.0.0.1:{self.port}/ws" + (f"?clientId={client_id}" if client_id else "")
        with connect(url, max_size=None, **kw) as conn:
            yield conn


def _postgres_bindir() -> str | None:
    """Where Debian's (or any) PostgreSQL server binaries are: ``pg_config --bindir``, else the newest packaged."""
    import glob
    import shutil

    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and os.path.isfile(os.path.join(out.stdout.strip(), "postgres")):
            return out.stdout.strip()
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def postgres_available() -> bool:
    return _postgres_bindir() is not None


class PostgresServer:
    """A throwaway PostgreSQL server for tests: its own data directory, on 127.0.0.1, trust authentication.

    ``url`` names the database ``ck``; :meth:`new_database` makes another one
    (a test that needs an empty database). Run as root, the server runs as the
    ``postgres`` user (PostgreSQL refuses root). Stopped by its PID.
    """

    def __init__(self, base_dir: Any, port: int | None = None):
        self.base_dir = os.path.abspath(str(base_dir))
        self.port = port or free_port()
        self._own_dir: str | None = None
        if os.geteuid() == 0:  # the postgres user must reach its folders: not under root's private temp dirs
            import tempfile

            self._own_dir = tempfile.mkdtemp(prefix="ck-postgres-")
            os.chmod(self._own_dir, 0o755)
            self.server_dir = self._own_dir
        else:
            self.server_dir = self.base_dir
        self.data = os.path.join(self.server_dir, "pgdata")
        self.sockets = os.path.join(self.server_dir, "pgsock")
        self.proc: subprocess.Popen | None = None
        bindir = _postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)")
        self.bindir = bindir

    def _owner(self) -> dict[str, Any]:
        """``Popen`` arguments that run a command as the ``postgres`` user when we are root (signals reach it)."""
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}

    @property
    def url(self) -> str:
        return self.database_url("ck")

    def database_url(self, name: str) -> str:
        return f"postgresql://ck@127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> PostgresServer:
        os.makedirs(self.base_dir, exist_ok=True)
        os.makedirs(self.sockets, exist_ok=True)
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            for path in (self.server_dir, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        if not os.path.isdir(self.data):
            done = subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "ck", "--auth", "trust",
                                   "-E", "UTF8", "--no-sync", "--locale", "C"],
                                  capture_output=True, text=True, cwd=self.server_dir, **self._owner())
            if done.returncode:
                raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        self.start()
        self.new_database("ck")
        return self

    def start(self) -> None:
        log = open(os.path.join(self.base_dir, "postgres.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.sockets,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.server_dir, **self._owner())
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited; see {self.base_dir}/postgres.log")
            time.sleep(0.05)
        raise TimeoutError("PostgreSQL did not start in 30 s")

    def new_database(self, name: str) -> str:
        """Create database ``name`` (if missing); returns its URL. Safe to call inside an event loop."""
        psql = [os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "ck",
                "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qtA"]
        for attempt in range(100):  # the server may still be starting up
            found = subprocess.run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname='{name}'"],
                                   capture_output=True, text=True)
            if found.returncode == 0:
                break
            if attempt == 99:
                raise RuntimeError(f"PostgreSQL is not answering: {found.stderr.strip()}")
            time.sleep(0.1)
        if found.stdout.strip() != "1":
            subprocess.run([*psql, "-c", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
        return self.database_url(name)

    def kill(self) -> None:
        """SIGKILL the server (a crash); :meth:`start` brings it back with its data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        # postgres's own children (backends) follow their postmaster; wait for its lock file to go
        pid_file = os.path.join(self.data, "postmaster.pid")
        deadline = time.monotonic() + 10
        while os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.05)
            with contextlib.suppress(OSError):
                with open(pid_file) as f:
                    pid = int(f.readline().strip() or 0)
                if pid and not _alive(pid):
                    os.unlink(pid_file)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if self._own_dir is not None:
            import shutil

            shutil.rmtree(self._own_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
