"""Billing files of older versions, imported into the kernel's database once.

Before the storage layer, billing kept its tables in a SQLite file of its own
(``comfy-kernel-billing.db`` beside the kernel's file, or
``--billing-database``). The tables now live in the kernel's database (SQLite
or PostgreSQL), so at start a file still lying there is read and its rows are
copied over in one transaction, if the kernel's database holds no billing
accounts or ledger rows yet; then the file is renamed ``<name>.imported`` and
the ledger continues where it stood. Ledger ids and event numbers are given
anew, in the same order (nothing refers to them). If the database already
holds accounts, the file is left alone and a warning names it: merging two
ledgers is not something to guess at.

Processes that start together (front-ends and workers sharing a directory)
must not import one file twice: the first renames it to
``<name>.importing-<pid>`` before reading it, so the others find nothing. (A
crash in between leaves that file; rename it back to import it at the next
start.) The copy itself first takes the row of the change counter, so two
files imported into one PostgreSQL database at once are copied one after the
other, and the second is left alone.
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import func, select

from comfy_kernel.storage import SQLiteDatabase, Transaction

from .store import BillingStore
from .tables import accounts, events, ledger, meta, ops, usage

log = logging.getLogger(__name__)

TABLES = (meta, accounts, ledger, usage, ops, events)
RENUMBERED = {"bl_ledger": "id", "bl_events": "seq"}


async def import_file(store: BillingStore, path: str) -> int | None:
    """Import the billing file at ``path`` if there is one to import; returns the rows copied (None: nothing done)."""
    db = store.db
    if not path or (isinstance(db, SQLiteDatabase) and os.path.abspath(db.path) == os.path.abspath(path)):
        return None
    staged = f"{path}.importing-{os.getpid()}"
    try:
        _move(path, staged)  # atomic: of several processes starting together, one takes the file
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("billing: %s cannot be imported (%s); left alone", path, exc)
        return None
    found = await _read(staged)
    if found is None:
        _move(staged, path)
        return None

    async def copy(tx: Transaction) -> int | None:
        await tx.scalar(store.advance)
        held = await tx.scalar(select(func.count()).select_from(accounts))
        held += await tx.scalar(select(func.count()).select_from(ledger))
        if held:
            return None
        copied = 0
        for table in TABLES:
            names, rows = found[table.name]
            for row in rows:
                values = dict(zip(names, row, strict=True))
                if table is meta:  # this database's own values (the change counter) win
                    await tx.execute(db.insert(meta).values(values).on_conflict_do_nothing(index_elements=["key"]))
                else:
                    await tx.execute(table.insert().values(values))
                copied += 1
        return copied

    try:
        copied = await store.write(copy)
    except BaseException:
        _move(staged, path)
        raise
    if copied is None:
        _move(staged, path)
        log.warning("billing: %s holds billing data, but the database already has accounts: not imported", path)
        return None
    _move(staged, path + ".imported")
    log.info("billing: imported %d rows from %s (renamed to %s.imported)", copied, path, path)
    return copied


def _move(source: str, target: str) -> None:
    """Rename a SQLite file with its write-ahead log (a server killed with -9 leaves committed rows there)."""
    os.rename(source, target)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(source + suffix):
            os.replace(source + suffix, target + suffix)


async def _read(path: str) -> dict[str, tuple[list[str], list[tuple]]] | None:
    """Every row of the billing tables in the file at ``path`` (None when it is not a billing file)."""
    source = SQLiteDatabase(path)
    await source.open()
    try:
        found = {}
        for table in TABLES:
            keep = [c for c in table.c if c.name != RENUMBERED.get(table.name)]
            stmt = select(*keep)
            if table.name in RENUMBERED:
                stmt = stmt.order_by(table.c[RENUMBERED[table.name]])
            found[table.name] = ([c.name for c in keep], await source.fetch_all(stmt))
        return found
    except Exception as exc:  # noqa: BLE001 - not a billing file (or a damaged one): say so, start anyway
        log.warning("billing: %s is not a billing database that can be imported (%s); left alone", path, exc)
        return None
    finally:
        await source.close()
