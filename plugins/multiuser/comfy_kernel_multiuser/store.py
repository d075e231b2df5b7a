"""The plugin's tables in the kernel's database (all prefixed ``mu_``), SQLite or PostgreSQL.

The tables are declared here with SQLAlchemy Core and created by the
plugin's migrations (:mod:`.migrations`); route handlers run their
statements through ``kernel.database``. The hooks the kernel calls
synchronously (who is calling, may a node open a file) read through
:class:`.blocking.BlockingReads` instead. Statements run on every request
are marked :func:`~.blocking.hot` and compiled once. A handler that reads
back what it just wrote asks for a ``fresh`` read, made in a transaction: on
SQLite ``kernel.database`` reads through one shared connection, which can
answer from an older snapshot while another read is in flight on it.

Secret material is never stored in the clear: sessions, API keys, setup
links, invites, authorization codes and refresh tokens are stored as SHA-256
digests of high-entropy random tokens; passwords as Argon2id hashes; secret
values and private signing keys encrypted (see :mod:`.secrets`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    select,
)

from comfy_kernel.storage import Database

from .blocking import BlockingReads, hot

Record = dict[str, Any]
Params = Mapping[str, Any] | None

metadata = MetaData()
users = Table(
    "mu_users", metadata,
    Column("id", Text, primary_key=True), Column("username", Text), Column("display_name", Text),
    Column("email", Text), Column("password_hash", Text), Column("is_admin", Integer), Column("disabled", Integer),
    Column("personal_workspace_id", Text), Column("created_at", Double),
)
external_identities = Table(
    "mu_external_identities", metadata,
    Column("issuer", Text, primary_key=True), Column("subject", Text, primary_key=True), Column("user_id", Text),
)
workspaces = Table(
    "mu_workspaces", metadata,
    Column("id", Text, primary_key=True), Column("name", Text), Column("type", Text), Column("created_by", Text),
    Column("created_at", Double), Column("deleted_at", Double),
)
members = Table(
    "mu_members", metadata,
    Column("workspace_id", Text, primary_key=True), Column("user_id", Text, primary_key=True),
    Column("role", Text), Column("joined_at", Double),
)
invites = Table(
    "mu_invites", metadata,
    Column("id", Text, primary_key=True), Column("workspace_id", Text), Column("email", Text),
    Column("token_hash", Text), Column("invited_by", Text), Column("created_at", Double),
    Column("expires_at", Double), Column("accepted_at", Double), Column("revoked_at", Double),
)
sessions = Table(
    "mu_sessions", metadata,
    Column("token_hash", Text, primary_key=True), Column("user_id", Text), Column("csrf_token", Text),
    Column("workspace_id", Text), Column("created_at", Double), Column("expires_at", Double),
    Column("address", Text), Column("user_agent", Text),
)
api_keys = Table(
    "mu_api_keys", metadata,
    Column("id", Text, primary_key=True), Column("key_hash", Text), Column("key_prefix", Text),
    Column("workspace_id", Text), Column("user_id", Text), Column("name", Text), Column("description", Text),
    Column("created_at", Double), Column("expires_at", Double), Column("last_used_at", Double),
    Column("revoked_at", Double),
)
signing_keys = Table(
    "mu_signing_keys", metadata,
    Column("kid", Text, primary_key=True), Column("private_key", LargeBinary), Column("public_jwk", Text),
    Column("created_at", Double), Column("sign_until", Double), Column("verify_until", Double),
)
user_secrets = Table(
    "mu_secrets", metadata,
    Column("id", Text, primary_key=True), Column("user_id", Text), Column("workspace_id", Text),
    Column("name", Text), Column("provider", Text), Column("ciphertext", LargeBinary), Column("created_at", Double),
    Column("updated_at", Double), Column("last_used_at", Double),
)
oauth_clients = Table(
    "mu_oauth_clients", metadata,
    Column("client_id", Text, primary_key=True), Column("client_name", Text), Column("application_type", Text),
    Column("redirect_uris", Text), Column("grant_types", Text), Column("response_types", Text),
    Column("created_at", Double),
)
oauth_requests = Table(
    "mu_oauth_requests", metadata,
    Column("id", Text, primary_key=True), Column("client_id", Text), Column("redirect_uri", Text),
    Column("scope", Text), Column("state", Text), Column("code_challenge", Text), Column("resource", Text),
    Column("csrf_token", Text), Column("user_id", Text), Column("created_at", Double), Column("expires_at", Double),
    Column("consumed_at", Double),
)
oauth_codes = Table(
    "mu_oauth_codes", metadata,
    Column("code_hash", Text, primary_key=True), Column("client_id", Text), Column("user_id", Text),
    Column("workspace_id", Text), Column("scope", Text), Column("resource", Text), Column("redirect_uri", Text),
    Column("code_challenge", Text), Column("expires_at", Double), Column("used_at", Double),
    Column("family_id", Text),
)
refresh_tokens = Table(
    "mu_refresh_tokens", metadata,
    Column("token_hash", Text, primary_key=True), Column("family_id", Text), Column("client_id", Text),
    Column("user_id", Text), Column("workspace_id", Text), Column("scope", Text), Column("resource", Text),
    Column("created_at", Double), Column("expires_at", Double), Column("rotated_at", Double),
    Column("revoked_at", Double),
)
oauth_consents = Table(
    "mu_oauth_consents", metadata,
    Column("user_id", Text, primary_key=True), Column("client_id", Text, primary_key=True),
    Column("resource", Text, primary_key=True), Column("workspace_id", Text, primary_key=True),
    Column("scope", Text), Column("granted_at", Double),
)
setup_tokens = Table(
    "mu_setup_tokens", metadata,
    Column("token_hash", Text, primary_key=True), Column("created_at", Double), Column("expires_at", Double),
    Column("used_at", Double),
)
files = Table(
    "mu_files", metadata,
    Column("path", Text, primary_key=True), Column("owner", Text, primary_key=True), Column("created_at", Double),
)
audit_log = Table(
    "mu_audit", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True), Column("at", Double), Column("event", Text),
    Column("outcome", Text), Column("user_id", Text), Column("actor_id", Text), Column("address", Text),
    Column("detail", Text),
)
U, W, M = users.c, workspaces.c, members.c

_USER = hot(select(users).where(U.id == bindparam("id")))
_MEMBERSHIP = hot(select(M.role).select_from(members.join(workspaces, W.id == M.workspace_id))
                  .where(M.workspace_id == bindparam("ws"), M.user_id == bindparam("user"), W.deleted_at.is_(None)))


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


def folded(column: Any, value: str) -> Any:
    """``column`` equals ``value`` whatever the case (usernames, e-mail addresses), on both back-ends."""
    return func.lower(column) == func.lower(value)


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a broken constraint (a taken unique name) from either back-end's driver.

    sqlite3 raises ``IntegrityError``, asyncpg a subclass of
    ``IntegrityConstraintViolationError``; the store imports neither driver.
    """
    return any(c.__name__ in ("IntegrityError", "IntegrityConstraintViolationError") for c in type(exc).__mro__)


def _names(stmt: Any) -> list[str]:
    return list(stmt.selected_columns.keys())


class Store:
    """Async access for handlers (``kernel.database``) plus blocking reads for the synchronous hooks."""

    def __init__(self, db: Database):
        self.db = db
        self.reads = BlockingReads(db)
        #: Serialises read-then-write sequences of this process (setup link, signing keys, external users).
        self.write_lock = asyncio.Lock()

    async def open(self) -> None:
        """Open the blocking reads (``kernel.database`` is opened and migrated by the kernel)."""
        await self.reads.open()

    async def close(self) -> None:
        await self.reads.close()

    def insert(self, table: Table) -> Any:
        """``INSERT`` with this database's ``on_conflict_do_update``/``on_conflict_do_nothing``."""
        return self.db.insert(table)

    # --- async helpers ------------------------------------------------------

    async def one(self, stmt: Any, params: Params = None, *, fresh: bool = False) -> Record | None:
        """The first row as a dict; ``fresh``: read in a transaction, which sees every committed write."""
        self.reads.ready(stmt)
        if fresh:
            async with self.db.transaction() as tx:
                row = await tx.fetch_one(stmt, params)
        else:
            row = await self.db.fetch_one(stmt, params)
        return dict(zip(_names(stmt), row, strict=True)) if row is not None else None

    async def all(self, stmt: Any, params: Params = None) -> list[Record]:
        rows = await self.db.fetch_all(self.reads.ready(stmt), params)
        names = _names(stmt)
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def scalar(self, stmt: Any, params: Params = None) -> Any:
        return await self.db.scalar(self.reads.ready(stmt), params)

    async def run(self, stmt: Any, params: Params = None) -> int:
        """Execute one write in its own transaction; returns the changed row count."""
        return await self.db.execute(self.reads.ready(stmt), params)

    async def run_many(self, statements: Sequence[Any]) -> list[int]:
        """Several writes in one transaction; returns each one's changed row count."""
        async with self.db.transaction() as tx:
            return [await tx.execute(stmt) for stmt in statements]

    # --- blocking reads (synchronous hooks) ------------------------------------

    def read_one(self, stmt: Any, params: Params = None) -> Record | None:
        row = self.reads.fetch_one(stmt, params)
        return dict(zip(_names(stmt), row, strict=True)) if row is not None else None

    # --- shared queries --------------------------------------------------------

    def user_sync(self, user_id: str) -> Record | None:
        return self.read_one(_USER, {"id": user_id})

    def membership_sync(self, workspace_id: str | None, user_id: str) -> str | None:
        """The user's role in a live workspace, or None."""
        row = self.reads.fetch_one(_MEMBERSHIP, {"ws": workspace_id, "user": user_id})
        return row[0] if row else None

    async def user(self, user_id: str, *, fresh: bool = False) -> Record | None:
        return await self.one(_USER, {"id": user_id}, fresh=fresh)

    async def user_by_name(self, username: str) -> Record | None:
        return await self.one(select(users).where(folded(U.username, username)))

    async def membership(self, workspace_id: str | None, user_id: str, *, fresh: bool = False) -> str | None:
        row = await self.one(_MEMBERSHIP, {"ws": workspace_id, "user": user_id}, fresh=fresh)
        return row["role"] if row else None

    async def user_count(self) -> int:
        return int(await self.db.scalar(select(func.count()).select_from(users)) or 0)
