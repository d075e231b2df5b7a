"""The task queue's tables on both back-ends (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3

import pytest

from comfy_kernel.migrations import KERNEL
from comfy_kernel.storage import connect, upgrade
from comfy_kernel.storage.migrations import script_heads
from comfy_kernel_manager.migrations import MANAGER
from comfy_kernel_manager.store import QueueStore


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    target = str(tmp_path / "m.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = connect(target)
    await db.open()
    await upgrade(db, [KERNEL, MANAGER])
    yield QueueStore(db)
    await db.close()


def test_the_declared_head_is_the_newest_script():
    assert script_heads([MANAGER]) == [MANAGER.head]


async def test_tasks_run_in_queue_order_and_survive_a_restart(store):
    first = await store.add("install", {"id": "a", "ui_id": "u1"})
    second = await store.add("update", {"id": "b"})
    third = await store.add("disable", {"id": "c"})
    assert first < second < third and await store.count("pending") == 3
    assert await store.take_next() == (first, "install", {"id": "a", "ui_id": "u1"})
    await store.requeue_running()  # a restart: the running task runs again
    assert (await store.take_next())[0] == first
    await store.finish(first, "done", {"ok": True, "at": {1, 2}}, 10.0)
    assert (await store.take_next())[0] == second
    assert [r[0] for r in await store.queued()] == [second, third] and (await store.queued())[0][3] == "running"
    await store.finish(second, "failed", {"ok": False, "msg": "no"}, 11.0)
    assert [(r[0], r[3], r[5]) for r in await store.finished(10.5)] == [(second, "failed", 11.0)]
    assert (await store.tasks())[0]["result"] == {"ok": True, "at": "{1, 2}"}
    assert await store.drop_pending() == 1
    await store.reset()
    assert await store.tasks() == [] and await store.take_next() is None
    assert await store.add("install", {}) > third  # ids are never reused


async def test_flags_and_batches(store):
    assert await store.meta("processing") is None
    await store.set_meta("processing", "1")
    await store.set_meta("processing", "0")
    assert await store.meta("processing") == "0"
    await store.save_batch("b1", 1.0, 2.0, {"operations": []})
    await store.save_batch("b2", 1.0, 3.0, {"operations": [1]})
    await store.save_batch("b1", 1.0, 4.0, {"operations": [2]})  # saved again: replaced
    assert await store.batch_ids() == ["b1", "b2"]
    assert await store.batch("b1") == {"operations": [2]} and await store.batch("nope") is None


@pytest.mark.sqlite_file
async def test_an_existing_sqlite_file_is_adopted(tmp_path):
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as conn:  # the schema as it was before migrations existed
        conn.executescript(
            "CREATE TABLE manager_tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, item TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'pending', result TEXT, created REAL NOT NULL, finished REAL);"
            "CREATE TABLE manager_meta (key TEXT PRIMARY KEY, value TEXT);"
            "INSERT INTO manager_tasks (kind, item, created) VALUES ('install', '{\"id\": \"kept\"}', 1);"
            "INSERT INTO manager_meta VALUES ('processing', '1');")
    db = connect(path)
    await db.open()
    try:
        await upgrade(db, [KERNEL, MANAGER])
        store = QueueStore(db)
        assert await store.meta("processing") == "1"
        assert await store.take_next() == (1, "install", {"id": "kept"})
        await store.save_batch("b", 1.0, 2.0, {})
    finally:
        await db.close()
