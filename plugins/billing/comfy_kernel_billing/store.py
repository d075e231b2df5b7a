"""Billing's writes to the kernel's database, and how a server learns of other processes' writes.

The tables live in the kernel's database (SQLite or PostgreSQL, see
``comfy_kernel.storage``); every billing change is one transaction run by
:meth:`BillingStore.write` (or many by :meth:`BillingStore.write_batch`, the
metered prompts of a quarter second). What keeps the money right on both
back-ends is in :mod:`.ledger`: each account row is locked
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer) before its
buckets are read and moved, and every ledger row, usage row and operation is
inserted with ``ON CONFLICT DO NOTHING`` on its unique key, so a replay
changes nothing. This module adds two things:

* writes of this process run one at a time, as they did on the single
  thread that used to own the billing file;
* each write transaction advances ``bl_meta.changes``. A server caches
  account rows; when the counter moves by more than its own writes (the
  ``comfy-kernel billing`` command, or another server on the same
  PostgreSQL database), it drops the cache (``on_external_change``). The
  counter is read every :attr:`BillingStore.WATCH` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import BigInteger, Text, cast, select

from comfy_kernel.storage import Database, Transaction

from .tables import meta

log = logging.getLogger(__name__)

Job = Callable[[Transaction], Awaitable[Any]]
CHANGES = "changes"


class BillingStore:
    """Billing's write path on ``db`` (see the module docstring)."""

    #: How often, when idle, to look for changes made by another process (seconds).
    WATCH = 1.0

    def __init__(self, db: Database, on_external_change: Callable[[], None] | None = None):
        self.db = db
        self.on_external_change = on_external_change
        self.failed_writes = 0
        self._lock = asyncio.Lock()
        self._seen: int | None = None
        self._watcher: asyncio.Task | None = None
        insert = db.insert(meta).values(key=CHANGES, value="1")
        #: Advances the change counter (returning it). Every billing write ends with it, so its row is also a
        #: lock a transaction can take first to run alone among billing writers (the import does).
        self.advance = db.prepare(insert.on_conflict_do_update(
            index_elements=["key"], set_={"value": cast(cast(meta.c.value, BigInteger) + 1, Text)})
            .returning(meta.c.value))
        self._read = db.prepare(select(meta.c.value).where(meta.c.key == CHANGES))

    async def open(self, watch: bool = True) -> None:
        """Start watching for other processes' writes (``watch=False``: a command that only writes)."""
        self._seen = await self._changes()
        if watch:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        task, self._watcher = self._watcher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def write(self, job: Job) -> Any:
        """``await job(tx)`` in a transaction of its own; returns its result (its exception rolls it back)."""
        async with self._lock:
            async with self.db.transaction() as tx:
                result = await job(tx)
                changes = await tx.scalar(self.advance)
            self._note(int(changes))
            return result

    async def write_batch(self, jobs: list[Job]) -> list[BaseException | None]:
        """Run ``jobs`` in one transaction; if one fails, each again in its own, so it spares the rest.

        Returns each job's exception (None when it was written). Jobs almost
        never fail, so the common path pays one commit for the batch.
        """
        if not jobs:
            return []
        async with self._lock:
            try:
                async with self.db.transaction() as tx:
                    for job in jobs:
                        await job(tx)
                    changes = await tx.scalar(self.advance)
                self._note(int(changes))
                return [None] * len(jobs)
            except Exception as exc:  # noqa: BLE001 - replayed one by one below
                if len(jobs) == 1:
                    self.failed_writes += 1
                    return [exc]
            outcomes: list[BaseException | None] = []
            for job in jobs:
                try:
                    async with self.db.transaction() as tx:
                        await job(tx)
                        changes = await tx.scalar(self.advance)
                    self._note(int(changes))
                    outcomes.append(None)
                except Exception as exc:  # noqa: BLE001 - handed back to the caller
                    self.failed_writes += 1
                    outcomes.append(exc)
            return outcomes

    # -- watching ------------------------------------------------------------------------------

    async def _changes(self) -> int:
        value = await self.db.scalar(self._read)
        return int(value) if value is not None else 0

    def _note(self, changes: int) -> None:
        """After a write of ours: did the counter also move for someone else's?"""
        seen, self._seen = self._seen, changes
        if seen is not None and changes != seen + 1:
            self._changed()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.WATCH)
            try:
                async with self._lock:  # not between a write of ours and its _note
                    changes = await self._changes()
            except Exception as exc:  # noqa: BLE001 - the database is away for a moment
                log.debug("billing: could not read the change counter (%s)", exc)
                continue
            if changes != self._seen:
                self._seen = changes
                self._changed()

    def _changed(self) -> None:
        if self.on_external_change is not None:
            self.on_external_change()
