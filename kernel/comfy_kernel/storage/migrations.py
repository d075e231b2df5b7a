"""Versioned schema migrations (Alembic) for the kernel and every plugin that keeps tables.

Each component ships a folder of Alembic revision scripts and declares it
with a :class:`Migrations` (the kernel's own; plugins return theirs from the
``ck_migrations`` hook). At start-up :func:`upgrade` brings each component
given to its head, the kernel first.

Each component keeps its version in a table of its own,
``ck_schema_<name>`` (Alembic's version table under our name), and is
migrated on its own: a plugin that is disabled or uninstalled leaves its
tables and version behind without stopping the others' upgrades. When a
component is at its declared head (every start but the first after an
upgrade) this costs one small query and Alembic is not even imported.

Processes that start together on one database (a cluster's front-ends and
workers) migrate one at a time: under a PostgreSQL advisory lock, or an
exclusive lock on ``<file>.migrating`` for SQLite; the later ones find
nothing left to do.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from .database import Database

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x636B6D69  # PostgreSQL advisory lock key held while migrating ("ckmi")


@dataclass(frozen=True)
class Migrations:
    """One component's revision scripts: ``versions`` is their folder, ``head`` the newest revision id."""

    name: str
    versions: str
    head: str

    @property
    def version_table(self) -> str:
        return f"ck_schema_{self.name}"


async def current_version(db: Database, component: Migrations) -> str | None:
    """The revision ``component`` is at in ``db`` (None before its first migration)."""
    from sqlalchemy import text

    try:
        return await db.scalar(text(f"SELECT version_num FROM {component.version_table}"))
    except Exception:  # no version table yet
        return None


async def upgrade(db: Database, components: list[Migrations]) -> list[str]:
    """Bring each component to its head; returns the revisions applied (empty when all were up to date)."""
    behind = [c for c in components if await current_version(db, c) != c.head]
    if not behind:
        return []
    if db.kind == "sqlite":
        return await asyncio.to_thread(_upgrade_sqlite, db.url, behind)
    return await _upgrade_postgres(db, behind)


def _upgrade_sqlite(url: str, components: list[Migrations]) -> list[str]:
    import fcntl

    from sqlalchemy import create_engine

    path = url[len("sqlite:///"):]
    with open(path + ".migrating", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine = create_engine(url)
        try:
            applied: list[str] = []
            for component in components:
                with engine.begin() as conn:
                    applied += _run(conn, component)
            return applied
        finally:
            engine.dispose()


async def _upgrade_postgres(db: Any, components: list[Migrations]) -> list[str]:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(db.dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        applied: list[str] = []
        for component in components:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                applied += await conn.run_sync(_run, component)
        return applied
    finally:
        await engine.dispose()


def _run(conn: Any, component: Migrations) -> list[str]:
    """Alembic's upgrade to ``head`` over ``conn``, without an ``env.py`` (the migration context is set here)."""
    from alembic.runtime.environment import EnvironmentContext

    config, script = _scripts(component)
    applied: list[str] = []

    def steps(revision: Any, context: Any) -> Any:
        return script._upgrade_revs("heads", revision)

    def note(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        applied.append(step.up_revision_id)

    with EnvironmentContext(config, script, fn=steps, destination_rev="heads") as env:
        env.configure(connection=conn, version_table=component.version_table, on_version_apply=note,
                      transaction_per_migration=False)
        with env.begin_transaction():
            env.run_migrations()
    if applied:
        log.info("database schema of %s upgraded: %s", component.name, ", ".join(applied))
    return applied


def script_heads(components: list[Migrations]) -> list[str]:
    """The newest revision of each component's scripts, sorted (tests compare them with the declared heads)."""
    return sorted(head for c in components for head in _scripts(c)[1].get_heads())


def _scripts(component: Migrations) -> tuple[Any, Any]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", component.versions)
    config.set_main_option("version_locations", component.versions)
    config.set_main_option("path_separator", "space")
    return config, ScriptDirectory.from_config(config)
