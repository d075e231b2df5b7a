"""History rows: the bound, and the queue row's JSON reused for the history row."""

from __future__ import annotations

import sqlite3

import orjson

from comfy_kernel.execution.store import Store

RESULT = {"outputs": {"2": {"text": ["x"]}}, "meta": {}, "status": {"status_str": "success", "completed": True,
                                                                 "messages": []}}


def item(i: int) -> list:
    return [i, f"p{i}", {"1": {"class_type": "X", "inputs": {"v": i}}}, {"client_id": "c",
                                                                        "auth_token_comfy_org": "secret"}, ["1"]]


async def finish(store: Store, i: int, owner: str = "o") -> None:
    blob = await store.enqueue(owner, item(i))
    await store.finish(owner, item(i), RESULT, 1.0, 2.0, 0.5, item_blob=blob)


def rows(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT prompt_id FROM ck_history ORDER BY seq")]


async def test_history_keeps_the_newest_rows(tmp_path):
    path = str(tmp_path / "k.db")
    store = Store(path, history_max_items=5)
    await store.open()
    try:
        for i in range(8):
            await finish(store, i)
        assert rows(path) == [f"p{i}" for i in range(3, 8)]
        await store.delete_history("o", ["p5", "p6"])
        await finish(store, 8)
        await finish(store, 9)
        assert rows(path) == ["p3", "p4", "p7", "p8", "p9"]
        await finish(store, 9)  # the same id again replaces its row
        await finish(store, 10)
        assert rows(path) == ["p4", "p7", "p8", "p9", "p10"]
    finally:
        await store.close()


async def test_bound_holds_across_restarts_and_other_owners(tmp_path):
    path = str(tmp_path / "k.db")
    store = Store(path, history_max_items=3)
    await store.open()
    for i in range(3):
        await finish(store, i, owner="a")
    await store.close()
    store = Store(path, history_max_items=3)  # a new server: the row count is not known yet
    await store.open()
    try:
        await finish(store, 3, owner="b")
        assert rows(path) == ["p1", "p2", "p3"]
    finally:
        await store.close()


async def test_history_entry_is_the_queue_json_without_credentials(tmp_path):
    store = Store(str(tmp_path / "k.db"))
    await store.open()
    try:
        await finish(store, 1)
        entry = orjson.loads(await store.history_entry("o", "p1"))
        assert list(entry) == ["prompt", "outputs", "status", "meta"]
        assert entry["prompt"] == [1, "p1", {"1": {"class_type": "X", "inputs": {"v": 1}}}, {"client_id": "c"}, ["1"]]
        assert entry["outputs"] == RESULT["outputs"] and entry["status"] == RESULT["status"]
    finally:
        await store.close()
