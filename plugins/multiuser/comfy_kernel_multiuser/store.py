"""The plugin's tables in the kernel's SQLite database (all prefixed ``mu_``).

Route handlers read through one aiosqlite connection and write through a
plain connection in a worker thread, each transaction whole (see
:meth:`Store._write`). The identity hook, which the
kernel calls synchronously for every request, uses a second, plain
``sqlite3`` connection for its point lookups: they hit primary keys or
unique indexes and take microseconds, which costs less than a thread hop.
WAL mode lets that reader see every committed write without blocking it.

Secret material is never stored in the clear: sessions, API keys, setup
links, invites, authorization codes and refresh tokens are stored as SHA-256
digests of high-entropy random tokens; passwords as Argon2id hashes; secret
values and private signing keys encrypted (see :mod:`.crypto`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from datetime import UTC, datetime

import aiosqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS mu_users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name TEXT NOT NULL,
    email TEXT COLLATE NOCASE,
    password_hash TEXT,
    is_admin INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    personal_workspace_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mu_external_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE TABLE IF NOT EXISTS mu_workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    deleted_at REAL
);
CREATE TABLE IF NOT EXISTS mu_members (
    workspace_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    joined_at REAL NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX IF NOT EXISTS mu_members_user ON mu_members(user_id);
CREATE TABLE IF NOT EXISTS mu_invites (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    email TEXT NOT NULL COLLATE NOCASE,
    token_hash TEXT NOT NULL UNIQUE,
    invited_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    accepted_at REAL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS mu_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    workspace_id TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    address TEXT,
    user_agent TEXT
);
CREATE INDEX IF NOT EXISTS mu_sessions_user ON mu_sessions(user_id);
CREATE TABLE IF NOT EXISTS mu_api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    expires_at REAL,
    last_used_at REAL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS mu_api_keys_ws ON mu_api_keys(workspace_id, user_id);
CREATE TABLE IF NOT EXISTS mu_signing_keys (
    kid TEXT PRIMARY KEY,
    private_key BLOB NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at REAL NOT NULL,
    sign_until REAL NOT NULL,
    verify_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mu_secrets (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    provider TEXT,
    ciphertext BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_used_at REAL,
    UNIQUE (user_id, workspace_id, name)
);
CREATE TABLE IF NOT EXISTS mu_oauth_clients (
    client_id TEXT PRIMARY KEY,
    client_name TEXT NOT NULL,
    application_type TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    response_types TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mu_oauth_requests (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    user_id TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    consumed_at REAL
);
CREATE TABLE IF NOT EXISTS mu_oauth_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    family_id TEXT
);
CREATE TABLE IF NOT EXISTS mu_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    rotated_at REAL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS mu_refresh_family ON mu_refresh_tokens(family_id);
CREATE TABLE IF NOT EXISTS mu_oauth_consents (
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    granted_at REAL NOT NULL,
    PRIMARY KEY (user_id, client_id, resource, workspace_id)
);
CREATE TABLE IF NOT EXISTS mu_setup_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
);
CREATE TABLE IF NOT EXISTS mu_files (
    path TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (path, owner)
);
CREATE TABLE IF NOT EXISTS mu_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    user_id TEXT,
    actor_id TEXT,
    address TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    """RFC 3339 in UTC, as the seed's ``date-time`` fields are."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: str) -> float:
    """Parse an RFC 3339 timestamp (``Z`` or offset); raises ValueError."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def digest(token: str) -> str:
    """SHA-256 of a random token: enough for 256-bit secrets, and indexable."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def new_id(prefix: str = "") -> str:
    import uuid

    return prefix + str(uuid.uuid4())


def init_schema(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    conn.commit()


def connect_sync(path: str) -> sqlite3.Connection:
    """A plain connection (identity lookups, the ``users`` CLI command)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class Store:
    """Async access for handlers plus a synchronous reader for the identity hook."""

    def __init__(self, path: str):
        self.path = path
        self.db: aiosqlite.Connection | None = None
        self.reader: sqlite3.Connection | None = None
        self.writer: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self.write_lock = None  # asyncio.Lock, created on the loop in open()

    async def open(self) -> None:
        import asyncio

        setup = connect_sync(self.path)
        init_schema(setup)
        setup.close()
        # Autocommit: the async connection only reads; writes go through ``writer``.
        self.db = await aiosqlite.connect(self.path, timeout=10.0, isolation_level=None)
        self.db.row_factory = aiosqlite.Row
        await self.db.execute("PRAGMA busy_timeout=10000")
        await self.db.execute("PRAGMA foreign_keys=ON")
        self.reader = connect_sync(self.path)
        self.writer = connect_sync(self.path)
        self.write_lock = asyncio.Lock()

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None
        # A write or identity lookup may still be running in a thread; closing
        # a connection under it crashes the interpreter, so wait for the locks.
        import asyncio

        await asyncio.to_thread(self._close_sync)

    def _close_sync(self) -> None:
        with self._reader_lock:
            if self.reader is not None:
                self.reader.close()
                self.reader = None
        with self._writer_lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None

    # --- async helpers ------------------------------------------------------

    async def one(self, sql: str, args: tuple = ()) -> aiosqlite.Row | None:
        assert self.db is not None
        async with self.db.execute(sql, args) as cur:
            return await cur.fetchone()

    async def all(self, sql: str, args: tuple = ()) -> list[aiosqlite.Row]:
        assert self.db is not None
        async with self.db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def run(self, sql: str, args: tuple = ()) -> int:
        """Execute one write in its own transaction; returns the changed row count."""
        return (await self._write([(sql, args)]))[0]

    async def run_many(self, statements: list[tuple[str, tuple]]) -> None:
        """Several writes in one transaction."""
        await self._write(statements)

    async def _write(self, statements: list[tuple[str, tuple]]) -> list[int]:
        """Run a whole transaction in a worker thread, BEGIN to COMMIT.

        A transaction must never stay open across an ``await``: other stores
        write to this database synchronously on the event loop, and one that
        waits there for our lock would stop the loop that is to commit it.
        """
        import asyncio

        return await asyncio.to_thread(self._write_sync, statements)

    def _write_sync(self, statements: list[tuple[str, tuple]]) -> list[int]:
        with self._writer_lock:
            if self.writer is None:
                raise RuntimeError("the multiuser store is closed")
            self.writer.execute("BEGIN IMMEDIATE")
            try:
                counts = [self.writer.execute(sql, args).rowcount for sql, args in statements]
            except BaseException:
                self.writer.execute("ROLLBACK")
                raise
            self.writer.execute("COMMIT")
            return counts

    # --- sync reader (identity hook) -------------------------------------------

    def read_one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        with self._reader_lock:
            if self.reader is None:
                raise RuntimeError("the multiuser store is closed")
            return self.reader.execute(sql, args).fetchone()

    def read_all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._reader_lock:
            if self.reader is None:
                raise RuntimeError("the multiuser store is closed")
            return list(self.reader.execute(sql, args).fetchall())

    # --- shared queries --------------------------------------------------------

    def user_sync(self, user_id: str) -> sqlite3.Row | None:
        return self.read_one("SELECT * FROM mu_users WHERE id=?", (user_id,))

    def membership_sync(self, workspace_id: str, user_id: str) -> str | None:
        """The user's role in a live workspace, or None."""
        row = self.read_one(
            "SELECT m.role FROM mu_members m JOIN mu_workspaces w ON w.id=m.workspace_id "
            "WHERE m.workspace_id=? AND m.user_id=? AND w.deleted_at IS NULL", (workspace_id, user_id))
        return row["role"] if row else None

    async def user(self, user_id: str) -> aiosqlite.Row | None:
        return await self.one("SELECT * FROM mu_users WHERE id=?", (user_id,))

    async def user_by_name(self, username: str) -> aiosqlite.Row | None:
        return await self.one("SELECT * FROM mu_users WHERE username=?", (username,))

    async def membership(self, workspace_id: str, user_id: str) -> str | None:
        row = await self.one(
            "SELECT m.role FROM mu_members m JOIN mu_workspaces w ON w.id=m.workspace_id "
            "WHERE m.workspace_id=? AND m.user_id=? AND w.deleted_at IS NULL", (workspace_id, user_id))
        return row["role"] if row else None

    async def user_count(self) -> int:
        row = await self.one("SELECT COUNT(*) AS n FROM mu_users")
        return int(row["n"]) if row else 0
