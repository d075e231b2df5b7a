"""Versioned schema migrations (Alembic) for the kernel and every plugin that keeps tables.

Each component ships a folder of Alembic revision scripts on its own branch
(``branch_labels = ("<name>",)``) and declares it with a :class:`Migrations`
(the kernel's own; plugins return theirs from the ``ck_migrations`` hook).
At start-up :func:`upgrade` brings the database to every branch's head.

When the database already is at the declared heads (every start but the
first after an upgrade) this costs one small query and Alembic is not even
imported. The versions live in ``ck_schema_versions`` (Alembic's version
table under our name), one row per branch.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from .database import Database

log = logging.getLogger(__name__)

VERSION_TABLE = "ck_schema_versions"
MIGRATION_LOCK = 0x636B6D69  # PostgreSQL advisory lock key held while migrating ("ckmi")


@dataclass(frozen=True)
class Migrations:
    """One component's revision scripts: ``versions`` is their folder, ``head`` the newest revision id."""

    name: str
    versions: str
    head: str


async def current_versions(db: Database) -> set[str]:
    """The revisions the database is at (empty for a new database)."""
    from sqlalchemy import text

    try:
        rows = await db.fetch_all(text(f"SELECT version_num FROM {VERSION_TABLE}"))
    except Exception:  # no version table yet
        return set()
    return {r[0] for r in rows}


async def upgrade(db: Database, components: list[Migrations]) -> list[str]:
    """Bring ``db`` to every component's head; returns the revisions applied (empty when up to date)."""
    heads = {c.head for c in components}
    if heads <= await current_versions(db):
        return []
    if db.kind == "sqlite":
        return await asyncio.to_thread(_upgrade_sqlite, db.url, components)
    return await _upgrade_postgres(db, components)


def _upgrade_sqlite(url: str, components: list[Migrations]) -> list[str]:
    """Migrate under an exclusive lock on ``<file>.migrating``: processes starting together on one file
    (a cluster's workers on one host) wait for the first, then find nothing left to do."""
    import fcntl

    from sqlalchemy import create_engine

    path = url[len("sqlite:///"):]
    with open(path + ".migrating", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                return _run(conn, components)
        finally:
            engine.dispose()


async def _upgrade_postgres(db: Any, components: list[Migrations]) -> list[str]:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(db.dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.begin() as conn:
            # Front-ends and workers of a cluster may start together: one migrates, the others wait for
            # it here and then find nothing left to do.
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            return await conn.run_sync(_run, components)
    finally:
        await engine.dispose()


def _run(conn: Any, components: list[Migrations]) -> list[str]:
    """Alembic's upgrade to ``heads`` over ``conn``, without an ``env.py`` (the migration context is set here)."""
    from alembic.runtime.environment import EnvironmentContext

    config, script = _scripts(components)
    applied: list[str] = []

    def steps(revision: Any, context: Any) -> Any:
        return script._upgrade_revs("heads", revision)

    def note(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        applied.append(step.up_revision_id)

    with EnvironmentContext(config, script, fn=steps, destination_rev="heads") as env:
        env.configure(connection=conn, version_table=VERSION_TABLE, on_version_apply=note,
                      transaction_per_migration=False)
        with env.begin_transaction():
            env.run_migrations()
    if applied:
        log.info("database schema upgraded: %s", ", ".join(applied))
    return applied


def script_heads(components: list[Migrations]) -> list[str]:
    """The newest revision of each branch, read from the scripts (a test compares them with the declared heads)."""
    return sorted(_scripts(components)[1].get_heads())


def _scripts(components: list[Migrations]) -> tuple[Any, Any]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", os.path.dirname(components[0].versions))
    config.set_main_option("version_locations", " ".join(c.versions for c in components))
    config.set_main_option("path_separator", "space")
    return config, ScriptDirectory.from_config(config)
