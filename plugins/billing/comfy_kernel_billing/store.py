"""The billing database: its schema and the one thread that talks to it.

Why a file of its own (``comfy-kernel-billing.db`` beside the kernel's
database) rather than tables in the kernel's: the queue writes three small
transactions per prompt on the server loop with a 5 ms lock timeout, and a
second writer in the same file would push those onto their slow path. A
separate file keeps the queue's writes uncontended, and lets the ledger be
backed up and kept on its own schedule (history is pruned; the ledger is
never). Both files live in the same directory; the kernel's database is only
read (through a read-only connection): workspace members for per-seat plans,
and history to reconcile after a crash.

All access goes through :class:`Database`: one thread, one connection.
Writes queued with :meth:`Database.submit` (a finished prompt's charge) cost
the server loop one append: the thread writes them every
:attr:`Database.FLUSH` seconds in one transaction (a failing job is
replayed alone, in a savepoint, so it spares the rest). :meth:`Database.write` and :meth:`Database.read`
run a job (after every charge queued before it) and hand back its result. The
thread also watches ``PRAGMA data_version`` so that changes made by the
``comfy-kernel billing`` command (another process) reach the server's cache
within about a second.
"""

from __future__ import annotations

import asyncio
import collections
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

    #: How often queued charges are written (seconds). Submitting one wakes no
    #: thread; a crash loses at most this much, and the next start charges
    #: those prompts from the kernel's history.
    FLUSH = 0.25
    #: How often, when idle, to look for changes made by another process (seconds).
    WATCH = 1.0

    def __init__(self, path: str, on_external_change: Callable[[], None] | None = None):
        self.path = path
        self.on_external_change = on_external_change
        self._calls: queue.Queue[Any] = queue.Queue()
        self._pending: collections.deque[Job] = collections.deque()
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
            self._calls.put(None)
            await asyncio.to_thread(thread.join, 30)

    def submit(self, job: Job) -> None:
        """Queue a write for the next flush (errors are logged); costs the caller one append."""
        self._pending.append(job)

    async def write(self, job: Job) -> Any:
        """Run a write job in its own savepoint, after every write queued before it, and return its result."""
        return await self._call(job, True)

    async def read(self, job: Job) -> Any:
        """Run a read job (after every write queued before it) and return its result."""
        return await self._call(job, False)

    async def _call(self, job: Job, write: bool) -> Any:
        if self._thread is None:
            raise RuntimeError("the billing database is closed")
        future = asyncio.get_running_loop().create_future()
        self._calls.put((job, write, future))
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
        watched = time.monotonic()
        try:
            while True:
                try:
                    call = self._calls.get(timeout=self.FLUSH)
                except queue.Empty:
                    call = ()
                batch = self._take_pending()
                stop = call is None
                if call:
                    batch.append(call)
                    while True:  # calls that arrived meanwhile join this transaction
                        try:
                            more = self._calls.get_nowait()
                        except queue.Empty:
                            break
                        if more is None:
                            stop = True
                            break
                        batch.append(more)
                if batch:
                    self._run_batch(conn, batch)
                if stop:
                    if self._pending:
                        self._run_batch(conn, self._take_pending())
                    return
                now = time.monotonic()
                if now - watched >= self.WATCH:
                    watched = now
                    current = conn.execute("PRAGMA data_version").fetchone()[0]
                    if current != version:
                        version = current
                        self._notify_change()
        finally:
            conn.close()

    def _take_pending(self) -> list[Any]:
        pending = self._pending
        batch = []
        while pending:
            batch.append((pending.popleft(), True, None))
        return batch

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        """Run a batch in one transaction; if a job fails, run it again job by job in savepoints.

        Jobs almost never fail, so the common path pays one BEGIN and one
        COMMIT for the whole batch; on a failure the transaction is rolled back
        and replayed with a savepoint per job, so only the failing job is lost.
        """
        if not any(write for _job, write, _future in batch):
            outcomes = [self._run_job(conn, job, future) for job, _write, future in batch]
        else:
            try:
                conn.execute("BEGIN IMMEDIATE")
                outcomes = [(future, job(conn), None) for job, _write, future in batch]
                conn.execute("COMMIT")
            except Exception:  # noqa: BLE001 - replayed one by one below
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                outcomes = self._run_isolated(conn, batch)
        loop = self._loop
        for future, result, exc in outcomes:
            if future is not None and loop is not None:
                loop.call_soon_threadsafe(_settle, future, result, exc)

    def _run_job(self, conn: sqlite3.Connection, job: Job, future: Any) -> tuple[Any, Any, BaseException | None]:
        try:
            return future, job(conn), None
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits
            if future is None:
                log.exception("billing: a queued write failed")
            return future, None, exc

    def _run_isolated(self, conn: sqlite3.Connection, batch: list[Any]) -> list[tuple[Any, Any, Any]]:
        outcomes: list[tuple[Any, Any, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, write, future in batch:
                if write:
                    conn.execute("SAVEPOINT job")
                future, result, exc = self._run_job(conn, job, future)
                if write:
                    if exc is not None:
                        conn.execute("ROLLBACK TO job")
                        self.failed_writes += 1
                    conn.execute("RELEASE job")
                outcomes.append((future, result, exc))
            conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - the whole batch failed (disk full, ...)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.exception("billing: a batch of %d jobs could not be written", len(batch))
            self.failed_writes += sum(1 for _job, write, _future in batch if write)
            outcomes = [(future, None, exc) for _job, _write, future in batch]
        return outcomes

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
