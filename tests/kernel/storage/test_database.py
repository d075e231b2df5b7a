"""The storage layer on both back-ends: statements, transactions, migrations, and the kernel's stores on them."""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

import orjson
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, bindparam, func, select, text

from comfy_kernel.execution.store import Store
from comfy_kernel.migrations import KERNEL
from comfy_kernel.storage import UnstorableText, connect, upgrade
from comfy_kernel.storage.migrations import Migrations, current_version, script_heads
from comfy_kernel.webhooks.store import WebhookStore

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Text, primary_key=True), Column("n", Integer))


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request, tmp_path):
    target = str(tmp_path / "k.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = connect(target)
    await database.open()
    await upgrade(database, [KERNEL])
    await database.execute(text("CREATE TABLE notes (id TEXT PRIMARY KEY, n INTEGER)"))
    yield database
    await database.close()


async def test_statements_run_the_same_on_both(db):
    add = db.prepare(notes.insert().values(id=bindparam("id"), n=bindparam("n")))
    for i in range(3):
        assert await db.execute(add, {"id": f"a{i}", "n": i}) == 1
    upsert = db.insert(notes).values(id="a1", n=10)
    await db.execute(upsert.on_conflict_do_update(index_elements=["id"], set_={"n": upsert.excluded.n}))
    await db.execute(db.insert(notes).values(id="a2", n=99).on_conflict_do_nothing(index_elements=["id"]))
    assert await db.fetch_all(select(notes.c.id, notes.c.n).order_by(notes.c.id)) == [
        ("a0", 0), ("a1", 10), ("a2", 2)]
    assert await db.scalar(select(func.sum(notes.c.n)).where(notes.c.id.in_(["a0", "a1"]))) == 10
    assert await db.execute(notes.delete().where(notes.c.id.in_(["a0", "zz"]))) == 1


async def test_a_failed_transaction_leaves_nothing(db):
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute(notes.insert().values(id="x", n=1))
            assert await tx.scalar(select(func.count()).select_from(notes)) == 1
            raise RuntimeError("stop")
    assert await db.scalar(select(func.count()).select_from(notes)) == 0
    async with db.transaction() as tx:
        await tx.execute(notes.insert().values(id="y", n=2))
    assert await db.fetch_all(select(notes.c.id)) == [("y",)]


async def test_migrations_run_once_per_component_and_each_keeps_its_version(db, tmp_path):
    assert await upgrade(db, [KERNEL]) == []  # already at the head: nothing to do
    versions = tmp_path / "extra"
    versions.mkdir()
    (versions / "x0001_first.py").write_text(
        'import sqlalchemy as sa\nfrom alembic import op\n'
        'revision = "x0001"\ndown_revision = None\nbranch_labels = ("extra",)\ndepends_on = None\n'
        'def upgrade():\n    op.create_table("extra_items", sa.Column("id", sa.Text, primary_key=True))\n'
        'def downgrade():\n    op.drop_table("extra_items")\n')
    extra = Migrations("extra", str(versions), head="x0001")
    assert await upgrade(db, [KERNEL, extra]) == ["x0001"]
    assert await upgrade(db, [KERNEL, extra]) == []
    assert await current_version(db, KERNEL) == KERNEL.head and await current_version(db, extra) == "x0001"
    await db.execute(text("INSERT INTO extra_items (id) VALUES ('ok')"))
    # A later kernel revision applies while a component that is not given (a disabled plugin) stays as it is.
    kernel_next = tmp_path / "kernel_next"
    kernel_next.mkdir()
    for script in pathlib.Path(KERNEL.versions).glob("k*.py"):
        (kernel_next / script.name).write_text(script.read_text())
    (kernel_next / "k9999_more.py").write_text(
        'import sqlalchemy as sa\nfrom alembic import op\n'
        f'revision = "k9999"\ndown_revision = "{KERNEL.head}"\nbranch_labels = None\ndepends_on = None\n'
        'def upgrade():\n    op.create_table("more_items", sa.Column("id", sa.Text, primary_key=True))\n'
        'def downgrade():\n    op.drop_table("more_items")\n')
    newer = Migrations("kernel", str(kernel_next), head="k9999")
    assert await upgrade(db, [newer]) == ["k9999"]
    assert await current_version(db, extra) == "x0001"


def test_the_kernels_declared_head_is_its_newest_script():
    assert script_heads([KERNEL]) == [KERNEL.head]


async def test_an_existing_sqlite_file_is_adopted(tmp_path):
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as conn:  # the schema as it was before migrations existed
        conn.executescript(
            "CREATE TABLE ck_queue (prompt_id TEXT PRIMARY KEY, owner TEXT NOT NULL, number REAL NOT NULL, "
            "item BLOB NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, "
            "created REAL NOT NULL, started REAL);"
            "INSERT INTO ck_queue VALUES ('p1', 'o', 1, x'5b5d', 'pending', 0, 1.0, NULL);")
    store = Store(path)
    await store.open()
    try:
        requeue, failed = await store.recover()
        assert requeue == [("o", [])] and failed == []
    finally:
        await store.close()


RESULT = {"outputs": {"2": {"text": ["x"]}}, "meta": {}, "status": {"status_str": "success", "completed": True,
                                                                 "messages": []}}


async def test_queue_and_history_on_both(db):
    store = Store(db, history_max_items=3)
    await store.open()
    items = [[i, f"p{i}", {"1": {"inputs": {"v": i}}}, {"auth_token_comfy_org": "secret"}, ["1"]] for i in range(5)]
    blobs = [await store.enqueue("o", it) for it in items]
    await store.mark_running("p0")
    await store.mark_running("p0")
    await store.mark_running("p1")
    requeue, failed = await store.recover()
    assert [it[1] for _, it in requeue] == ["p1", "p2", "p3", "p4"] and [it[1] for _, it, _ in failed] == ["p0"]
    assert await store.delete_pending(["p4"], "someone else") == 0
    assert await store.delete_pending(["p4"], "o") == 1
    for it, blob in zip(items[:4], blobs[:4], strict=True):
        await store.finish("o", it, RESULT, 1.0, 2.0, 0.5, item_blob=blob)
    assert [pid for pid, _ in await store.history("o", None, 0)] == ["p1", "p2", "p3"]  # bound of 3
    assert [pid for pid, _ in await store.history("o", 2, -1)] == ["p2", "p3"]
    entry = orjson.loads(await store.history_entry("o", "p2"))
    assert entry["prompt"][3] == {} and entry["outputs"] == RESULT["outputs"]
    assert (await store.history_record("o", "p3"))[1:] == (0.5, 1.0, 2.0)
    assert [r[0] for r in await store.history_rows("o")] == ["p1", "p2", "p3"]
    await store.delete_history("o", ["p1"])
    assert [pid for pid, _ in await store.history("o", None, 0)] == ["p2", "p3"]
    await store.finish("o", items[2], RESULT, 1.0, 2.0, 0.5)  # the same prompt id finished again: now last
    assert [pid for pid, _ in await store.history("o", None, 0)] == ["p3", "p2"]
    assert await store.history("nobody", None, 0) == []


async def test_webhook_tables_on_both(db):
    store = WebhookStore(db)
    record = {"id": "e1", "owner": "o", "url": "http://127.0.0.1:1/h", "events": ["execution_success"],
              "secret": "s", "description": "", "enabled": True, "created": 1.0, "updated": 1.0}
    await store.add_endpoint(record)
    await store.update_endpoint("e1", {"enabled": False, "events": ["a", "b"]})
    got = await store.endpoint("e1")
    assert got["events"] == ["a", "b"] and got["enabled"] is False
    assert await store.owner_secret("o", lambda: "first") == "first"
    assert await store.owner_secret("o", lambda: "second") == "first"
    await store.track("p1", "o", [{"url": "u"}], "http://base")
    rows = [{"id": f"d{i}", "prompt_id": "p1", "owner": "o", "event": "e", "url": "u", "payload": b"{}"}
            for i in range(2)]
    await store.add_deliveries(rows, final_of="p1")
    await store.add_deliveries(rows)  # queued twice: still two
    due = await store.due(10**10, set(), 10)
    assert [d["id"] for d in due] == ["d0", "d1"] and due[0]["payload"] == b"{}"

    class Outcome:
        status, error, duration_ms = 200, None, 5

    await store.record_attempt(due[0], Outcome(), "delivered", 0.0)
    assert not await store.still_due(due[0]) and await store.still_due(due[1])
    assert await store.next_due({"d1"}) is None
    log = await store.job_deliveries("p1", "o")
    assert [len(d["log"]) for d in log] == [1, 0] and await store.tracked() == []


async def test_text_a_database_cannot_hold_is_refused_by_name(db):
    """A NUL: SQLite stores it, PostgreSQL refuses it; an unpaired surrogate: neither. Refused as UnstorableText
    (a request that carried one is answered 400)."""
    await db.execute(notes.insert().values(id="fine\u00e9", n=0))
    if db.kind == "sqlite":
        await db.execute(notes.insert().values(id="a\x00b", n=1))
        assert await db.scalar(select(notes.c.n).where(notes.c.id == "a\x00b")) == 1
    else:
        with pytest.raises(UnstorableText):
            await db.execute(notes.insert().values(id="a\x00b", n=1))
        with pytest.raises(UnstorableText):
            await db.fetch_all(select(notes.c.n).where(notes.c.id == "a\x00b"))
    with pytest.raises(UnstorableText):
        await db.execute(notes.insert().values(id="x\ud800y", n=1))


async def test_a_negative_history_bound_means_none(db):
    store = Store(db)
    await store.open()
    item = [0, "p0", {}, {}, []]
    await store.finish("o", item, RESULT, 1.0, 2.0, 0.5, item_blob=await store.enqueue("o", item))
    assert [pid for pid, _ in await store.history("o", -5, 0)] == ["p0"]


async def test_processes_starting_together_migrate_once(postgres_url):
    """Several processes of a cluster upgrading one PostgreSQL database at the same moment: one applies, none fails."""
    import asyncio

    dbs = [connect(postgres_url) for _ in range(4)]
    for d in dbs:
        await d.open()
    try:
        applied = await asyncio.gather(*(upgrade(d, [KERNEL]) for d in dbs))
        assert sorted(len(a) for a in applied) == [0, 0, 0, 2]
    finally:
        for d in dbs:
            await d.close()


def test_the_sqlite_path_is_refused_by_name_with_a_postgres_database(tmp_path):
    """A plugin that still opens the SQLite file itself fails to start on PostgreSQL instead of splitting state."""
    from comfy_kernel.config import default_config
    from comfy_kernel.kernel import Kernel
    from comfy_kernel.storage import PostgresDatabase, SQLiteDatabase

    local = Kernel(default_config(base_directory=str(tmp_path)))
    assert isinstance(local.database, SQLiteDatabase) and local.database.path == local.database_path
    shared = Kernel(default_config(base_directory=str(tmp_path), database="postgresql://ck@127.0.0.1:1/ck"))
    assert isinstance(shared.database, PostgresDatabase)
    with pytest.raises(RuntimeError, match="cannot use the PostgreSQL database"):
        _ = shared.database_path


def test_processes_starting_together_migrate_a_sqlite_file_once(tmp_path):
    """Separate processes (threads here cannot share the lock file's point) upgrading one new SQLite file together."""
    import subprocess
    import sys

    path = str(tmp_path / "shared.db")
    script = ("import asyncio, sys\nfrom comfy_kernel.storage import connect, upgrade\nfrom comfy_kernel.migrations "
              "import KERNEL\nasync def main():\n    db = connect(sys.argv[1]); await db.open()\n"
              "    print(len(await upgrade(db, [KERNEL]))); await db.close()\nasyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert sorted(int(out) for out, _ in results) == [0, 0, 0, 2]


async def test_reads_interleaved_with_writes_see_every_committed_row(db):
    """Twenty requests each writing a row and reading it back at once: none reads an older snapshot."""
    import asyncio

    add = db.prepare(notes.insert().values(id=bindparam("id"), n=bindparam("n")))
    find = db.prepare(select(notes.c.n).where(notes.c.id == bindparam("id")))

    async def request(i: int) -> Any:
        await db.execute(add, {"id": f"r{i}", "n": i})
        return await db.scalar(find, {"id": f"r{i}"})

    assert await asyncio.gather(*(request(i) for i in range(20))) == list(range(20))


async def test_many_rows_in_one_statement_inside_and_outside_a_transaction(db):
    add = notes.insert().values(id=bindparam("id"), n=bindparam("n"))
    await db.execute_many(add, [{"id": f"a{i}", "n": i} for i in range(50)])
    async with db.transaction() as tx:
        await tx.execute_many(add, [{"id": f"b{i}", "n": i} for i in range(50)])
    assert await db.scalar(select(func.count()).select_from(notes)) == 100
    with pytest.raises(Exception):  # noqa: B017 - either driver's unique violation
        async with db.transaction() as tx:
            await tx.execute_many(add, [{"id": "c0", "n": 0}, {"id": "a1", "n": 1}])
    assert await db.scalar(select(func.count()).select_from(notes).where(notes.c.id == "c0")) == 0
