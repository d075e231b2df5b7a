"""The asset store on both back-ends (SQLite and PostgreSQL): the statements every route and scan relies on."""

from __future__ import annotations

import sqlite3

import pytest

from comfy_kernel.migrations import KERNEL
from comfy_kernel.storage import UnstorableText, connect, upgrade
from comfy_kernel.storage.migrations import script_heads
from comfy_kernel_assets.migrations import ASSETS
from comfy_kernel_assets.store import AssetFilter, AssetStore, FilterError

H1, H2 = "blake3:" + "1" * 64, "blake3:" + "2" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    target = str(tmp_path / "a.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = connect(target)
    await db.open()
    await upgrade(db, [KERNEL, ASSETS])
    s = AssetStore(db)
    await s.open()
    yield s
    await s.close()
    await db.close()


def test_the_declared_head_is_the_newest_script():
    assert script_heads([ASSETS]) == [ASSETS.head]


async def add(store: AssetStore, owner: str, name: str, content_hash: str = H1, **kw) -> str:
    asset_id, _ = await store.insert_asset(owner=owner, name=name, content_hash=content_hash, size=3_000_000_000,
                                           mime_type="image/png", **kw)
    return asset_id


async def test_assets_contents_and_tags(store):
    first, created = await store.insert_asset(owner="alice", name="a.png", content_hash=H1, size=5,
                                              mime_type="image/png", tags=["Pics", "x", "x"], record_content=True,
                                              blob=True)
    again, created_again = await store.insert_asset(owner="bob", name="b.png", content_hash=H1, size=5,
                                                    mime_type=None, record_content=True)
    assert created and not created_again
    assert (await store.content(H1))["has_blob"] == 1
    assert await store.owner_knows_hash("bob", H1) and not await store.owner_knows_hash("carol", H1)
    record = await store.get(first, "alice")
    assert record["tags"] == ["Pics", "x"] and record["user_metadata"] == "{}" and record["missing"] == 0
    assert await store.get(first, "bob") is None
    assert await store.add_tags(first, ["y", "x"]) == (["y"], ["x"])
    assert await store.remove_tags(first, ["y", "z"]) == (["y"], ["z"])
    await store.update(first, {"name": "c.png", "user_metadata": {"k": 1}, "owner": "ignored"})
    record = await store.get(first, "alice")
    assert record["name"] == "c.png" and record["owner"] == "alice" and record["user_metadata"] == '{"k":1}'
    assert await store.id_taken(first) and not await store.id_taken("nope")
    assert not await store.delete(first, H1)  # bob's asset still refers to the content
    assert await store.delete(again, H1)
    assert await store.content(H1) is None


async def test_listing_filters_cursors_and_tags(store):
    ids = []
    for i, (owner, name) in enumerate([("", "Shared-B"), ("alice", "a-1"), ("alice", "A-2"), ("", "shared-a"),
                                       ("alice", "big_one")]):
        ids.append(await add(store, owner, name, tags=["t", f"n{i % 2}"], user_metadata={"i": i, "flag": i == 2,
                                                                                       "s": f"v{i}", "none": None}))
    flt = AssetFilter(owner="alice")
    rows, total, cursor = await store.list(flt, sort="name", order="asc", limit=3)
    assert total == 5 and [r["name"] for r in rows] == ["A-2", "Shared-B", "a-1"] and rows[0]["size"] == 3_000_000_000
    rows, _, cursor = await store.list(flt, sort="name", order="asc", limit=3, after=cursor)
    assert [r["name"] for r in rows] == ["big_one", "shared-a"] and cursor is None
    with pytest.raises(FilterError):
        await store.list(flt, sort="created_at", after=store_cursor("text", ids[0]))
    assert (await store.list(AssetFilter(owner="alice", name_contains="SHARED"), limit=10))[1] == 2
    assert (await store.list(AssetFilter(owner="alice", name_contains="_"), limit=10))[1] == 1  # not a wildcard
    assert (await store.list(AssetFilter(owner="alice", include_public=False), limit=10))[1] == 3
    assert (await store.list(AssetFilter(owner="alice", include_tags=["t", "n0"]), limit=10))[1] == 3
    assert (await store.list(AssetFilter(owner="alice", include_tags=["t"], exclude_tags=["n1"]), limit=10))[1] == 3
    for metadata, count in (({"i": 2}, 1), ({"i": [1, 3]}, 2), ({"flag": True}, 1), ({"flag": False}, 4),
                            ({"s": "v4"}, 1), ({"none": None}, 5), ({"absent": None}, 0), ({"i": []}, 0)):
        rows, total, _ = await store.list(AssetFilter(owner="alice", metadata=metadata), limit=10)
        assert total == len(rows) == count, metadata
    assert (await store.list(AssetFilter(owner="alice", ids=[ids[1], ids[3]]), limit=10))[1] == 2
    assert (await store.list(AssetFilter(owner="alice", ids=[]), limit=10))[1] == 0
    assert await store.tag_histogram(AssetFilter(owner="alice")) == {"t": 5, "n0": 3, "n1": 2}
    tags, total = await store.list_tags("alice", include_public=True, prefix="N", search=None, order="count_desc",
                                        limit=10, offset=0)
    assert tags == [("n0", 3), ("n1", 2)] and total == 2
    tags, total = await store.list_tags("alice", include_public=False, prefix=None, search=None, order="name_asc",
                                        limit=1, offset=1)
    assert tags == [("n1", 1)] and total == 3
    assert (await store.by_name("alice", "shared-a"))["owner"] == ""
    await store.set_missing([ids[3]], True)
    assert await store.by_name("alice", "shared-a") is None
    assert (await store.list(AssetFilter(owner="alice", include_tags=["t"]), limit=10))[1] == 4


def store_cursor(value, asset_id: str) -> str:
    from comfy_kernel_assets.store import encode_cursor

    return encode_cursor(value, asset_id)


async def test_a_scan_batch_and_pruning(store):
    row = {"id": "00000000-0000-0000-0000-000000000001", "owner": "", "name": "f.bin", "hash": H2, "size": 2**40,
           "mime_type": None, "user_metadata": "{}", "preview_id": None, "job_id": None, "file_path": "/m/f.bin",
           "source": "seed", "missing": 0, "created_at": 1.0, "updated_at": 1.0, "last_access": 1.0}
    seen = [{"path": "/m/f.bin", "size": 2**40, "mtime": 1.5, "hash": H2}]
    contents = [{"hash": H2, "size": 2**40, "mime_type": None, "has_blob": 0, "created_at": 1.0}]
    await store.record_scan(contents, [row], [{"asset_id": row["id"], "tag": "models", "owner": "", "missing": 0}],
                            [], seen)
    await store.record_scan(contents, [], [], [], seen)  # the same batch again: contents and seen rows kept once
    assert await store.seen_files() == {"/m/f.bin": (2**40, 1.5, H2)}
    assert await store.seeded_files() == [("/m/f.bin", row["id"], False)]
    await store.forget_files([(row["id"], "/m/f.bin")])
    assert await store.seeded_files() == [("/m/f.bin", row["id"], True)] and await store.seen_files() == {}
    assert await store.seeded_files(present_only=True) == []
    await store.record_scan([], [], [], [{"aid": row["id"], "new_hash": H1, "new_size": 7, "now": 2.0}], [])
    record = await store.get(row["id"], "")
    assert (record["hash"], record["size"], record["missing"]) == (H1, 7, 0)
    assert (await store.list(AssetFilter(owner="", include_tags=["models"]), limit=5))[1] == 1
    assert await store.any_file_for_hash(H1) == ["/m/f.bin"]
    await store.insert_many([{"id": "x1", "owner": "o", "name": "n", "hash": H1, "size": 1, "tags": ["a"]}])
    assert (await store.get("x1", "o"))["tags"] == ["a"]
    job = await store.insert_asset(owner="o", name="out.png", content_hash=H1, size=1, mime_type=None,
                                   job_id="j1", file_path="/out/out.png", record_content=True)
    assert job[1] is False and await store.has_job_file("o", "j1", "/out/out.png")
    assert not await store.has_job_file("o", "j2", "/out/out.png")


async def test_tasks(store):
    task = await store.create_task("o", "asset_export", {"export_name": "", "asset_ids": ["a"]})
    assert task["status"] == "created" and task["idempotency_key"] == task["id"]
    await store.set_task_payload(task["id"], export_name="e.zip")
    assert not await store.export_done("o", "e.zip")
    await store.update_task(task["id"], status="completed", result={"n": 1}, completed_at=5.0)
    assert await store.export_done("o", "e.zip") and not await store.export_done("p", "e.zip")
    got = await store.get_task(task["id"], "o")
    assert got["payload"] == {"export_name": "e.zip", "asset_ids": ["a"]} and got["result"] == {"n": 1}
    await store.create_task("o", "asset_download", {}, "key-1")
    rows, total = await store.list_tasks("o", task_name=None, idempotency_key="key-1", status=None,
                                         created_after=None, created_before=None, newest_first=True, limit=5,
                                         offset=0)
    assert total == 1 and rows[0]["task_name"] == "asset_download"
    assert await store.fail_interrupted_tasks() == 1
    assert await store.fail_interrupted_tasks() == 0


async def test_text_the_database_cannot_hold_is_never_found(store):
    nul = "a\x00b"
    await add(store, "o", "n", job_id="j", user_metadata={"k": "v"})
    assert await store.get(nul, "o") is None and await store.get_task(nul, "o") is None
    for flt in (AssetFilter(owner="o", name_contains=nul), AssetFilter(owner="o", metadata={"k": [nul]}),
                AssetFilter(owner="o", job_ids=[nul]), AssetFilter(owner="o", ids=[nul])):
        assert (await store.list(flt, limit=5))[1] == 0
    assert (await store.list(AssetFilter(owner="o", metadata={"k": [nul, "v"]}, job_ids=[nul, "j"]), limit=5))[1] == 1
    assert await store.list_tags("o", include_public=True, prefix=nul, search=None, order="name_asc", limit=5,
                                 offset=0) == ([], 0)
    if store.db.kind == "postgresql":  # its jsonb cannot hold a NUL: refused when written, never in a filter
        with pytest.raises(UnstorableText):
            await add(store, "o", "n", user_metadata={"k": nul})
        with pytest.raises(UnstorableText):
            await store.create_task("o", "asset_download", {"source_url": nul})
    else:
        await add(store, "o", "n", user_metadata={"k": nul})
    await add(store, "o", "n", user_metadata={"k": "\\u0000"})  # a backslash, then text: not a NUL


@pytest.mark.sqlite_file
async def test_an_existing_sqlite_file_is_adopted(tmp_path):
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as conn:  # part of the schema as it was before migrations existed
        conn.executescript(
            "CREATE TABLE assets_items (id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL,"
            " hash TEXT NOT NULL, size INTEGER NOT NULL, mime_type TEXT, user_metadata TEXT NOT NULL DEFAULT '{}',"
            " preview_id TEXT, job_id TEXT, file_path TEXT, source TEXT, missing INTEGER NOT NULL DEFAULT 0,"
            " created_at REAL NOT NULL, updated_at REAL NOT NULL, last_access REAL NOT NULL);"
            "CREATE INDEX assets_items_hash ON assets_items(hash);"
            "INSERT INTO assets_items(id, owner, name, hash, size, created_at, updated_at, last_access)"
            " VALUES ('old', 'o', 'kept.png', 'h', 1, 1, 1, 1);")
    store = AssetStore(path)
    await store.open()
    try:
        assert (await store.get("old", "o"))["name"] == "kept.png"
        assert (await store.create_task("o", "asset_download", {}))["status"] == "created"
    finally:
        await store.close()
