"""The billing database: its schema and the one thread that talks to it.

Why a file of its own (``comfy-kernel-billing.db`` beside the kernel's
database) rather than tables in the kernel's: the queue writes three small
transactions per prompt on the server loop with a 5 ms lock timeout, and a
second writer in the same file would push those onto their slow path. A
separate file keeps the queue's writes uncontended, and lets the ledger be
backed up and kept on its own schedule (history is pruned; the ledger is
never). Both files live in the same directory, and the kernel's history is
read (attached read-only) only to reconcile after a crash.

All access goes through :class:`Database`: one thread, one connection.
Writes queued with :meth:`Database.submit` (a finished prompt's charge) are
batched into one transaction (waiting up to :attr:`Database.LINGER` for company), each in a savepoint so one failing job spares
the rest; :meth:`Database.call` runs a job and hands back its result. When
idle the thread watches ``PRAGMA data_version`` so that changes made by the
``comfy-kernel billing`` command (another process) reach the server's cache
within about a second.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS bl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bl_accounts (
    account TEXT PRIMARY KEY,
    plan TEXT,
    status TEXT NOT NULL,
    period TEXT,
    period_start REAL,
    period_end REAL,
    cancel_at REAL,
    pending_plan TEXT,
    monthly_micros INTEGER NOT NULL DEFAULT 0,
    prepaid_micros INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bl_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    user_id TEXT,
    kind TEXT NOT NULL,
    bucket TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    prompt_id TEXT,
    op_id TEXT,
    actor TEXT,
    note TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bl_ledger_account ON bl_ledger(account, id);
CREATE TRIGGER IF NOT EXISTS bl_ledger_no_update BEFORE UPDATE ON bl_ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS bl_ledger_no_delete BEFORE DELETE ON bl_ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS bl_usage (
    run_id TEXT PRIMARY KEY,
    prompt_id TEXT NOT NULL,
    account TEXT NOT NULL,
    user_id TEXT,
    workspace_id TEXT,
    plan TEXT,
    worker TEXT,
    device_type TEXT,
    device_name TEXT,
    status TEXT NOT NULL,
    created REAL,
    started REAL,
    ended REAL NOT NULL,
    wall_s REAL NOT NULL,
    busy_s REAL NOT NULL,
    nodes TEXT NOT NULL,
    models TEXT NOT NULL,
    outputs_count INTEGER NOT NULL,
    outputs_bytes INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    recovered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS bl_usage_account ON bl_usage(account, ended);
CREATE INDEX IF NOT EXISTS bl_usage_user ON bl_usage(user_id, ended);
CREATE INDEX IF NOT EXISTS bl_usage_ended ON bl_usage(ended);
CREATE TABLE IF NOT EXISTS bl_ops (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    user_id TEXT,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    idempotency_key TEXT,
    error_message TEXT,
    provider TEXT,
    started REAL NOT NULL,
    completed REAL,
    UNIQUE(account, idempotency_key)
);
CREATE INDEX IF NOT EXISTS bl_ops_status ON bl_ops(status, started);
CREATE TABLE IF NOT EXISTS bl_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    event_type TEXT NOT NULL,
    params TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bl_events_account ON bl_events(account, seq);
"""

Job = Callable[[sqlite3.Connection], Any]


def connect(path: str) -> sqlite3.Connection:
    """A connection with the schema in place (also used by the CLI)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(SCHEMA)
    return conn


def transaction(conn: sqlite3.Connection, job: Job) -> Any:
    """Run ``job(conn)`` in one write transaction (for the CLI and tests)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = job(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class Database:
    """The billing database's own thread (see the module docstring)."""

    BATCH = 256
    #: How long queued charges wait for company before they commit (seconds). A crash
    #: loses at most this much; the next start charges those prompts from history.
    LINGER = 0.05

    def __init__(self, path: str, on_external_change: Callable[[], None] | None = None):
        self.path = path
        self.on_external_change = on_external_change
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.failed_writes = 0

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="billing-db", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(thread.join, 30)

    def submit(self, job: Job) -> None:
        """Queue a write; it commits with the next batch (errors are logged)."""
        self._jobs.put((job, True, None))

    async def write(self, job: Job) -> Any:
        """Run a write job in its own savepoint and return its result."""
        return await self._call(job, True)

    async def read(self, job: Job) -> Any:
        """Run a read job (after every write queued before it) and return its result."""
        return await self._call(job, False)

    async def _call(self, job: Job, write: bool) -> Any:
        if self._thread is None:
            raise RuntimeError("the billing database is closed")
        future = asyncio.get_running_loop().create_future()
        self._jobs.put((job, write, future))
        return await future

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = connect(self.path)
            version = conn.execute("PRAGMA data_version").fetchone()[0]
        except BaseException as exc:  # noqa: BLE001 - reported to open()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                try:
                    first = self._jobs.get(timeout=1.0)
                except queue.Empty:
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                    if now != version:
                        version = now
                        self._notify_change()
                    continue
                if first is None:
                    return
                batch = [first]
                # Charges (no one waits on them) linger a moment to share one commit.
                deadline = time.monotonic() + (self.LINGER if first[2] is None else 0.0)
                while len(batch) < self.BATCH:
                    wait = deadline - time.monotonic()
                    try:
                        nxt = self._jobs.get(timeout=wait) if wait > 0 else self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._jobs.put(None)
                        break
                    batch.append(nxt)
                    if nxt[2] is not None:  # someone waits for this one: commit now
                        deadline = 0.0
                self._run_batch(conn, batch)
                now = conn.execute("PRAGMA data_version").fetchone()[0]
                if now != version:
                    version = now
                    self._notify_change()
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        outcomes: list[tuple[Any, Any, BaseException | None]] = []
        writes = [entry for entry in batch if entry[1]]
        if writes:
            conn.execute("BEGIN IMMEDIATE")
        try:
            for job, write, future in batch:
                if write:
                    conn.execute("SAVEPOINT job")
                try:
                    result = job(conn)
                except Exception as exc:  # noqa: BLE001 - one job's failure spares the batch
                    if write:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        self.failed_writes += 1
                    if future is None:
                        log.exception("billing: a queued write failed")
                    outcomes.append((future, None, exc))
                    continue
                if write:
                    conn.execute("RELEASE job")
                outcomes.append((future, result, None))
            if writes:
                conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - the whole batch failed (disk full, ...)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.exception("billing: a batch of %d jobs could not be written", len(batch))
            self.failed_writes += len(writes)
            outcomes = [(future, None, exc) for _job, _write, future in batch]
        loop = self._loop
        for future, result, exc in outcomes:
            if future is not None and loop is not None:
                loop.call_soon_threadsafe(_settle, future, result, exc)

    def _notify_change(self) -> None:
        if self.on_external_change is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_external_change)


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
