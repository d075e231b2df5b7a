"""The hub's tables on both back-ends: migrations, versions, snapshots, listings, profiles, labels, uploads."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import pytest

from comfy_kernel.migrations import KERNEL
from comfy_kernel.storage import connect, upgrade
from comfy_kernel.storage.migrations import script_heads
from comfy_kernel.testing import sqlite_schema
from comfy_kernel_hub import plugin
from comfy_kernel_hub.hub import DEFAULT_LABELS
from comfy_kernel_hub.migrations import HUB
from comfy_kernel_hub.store import HubStore, VersionConflict, is_conflict, load

OLD_SCHEMA = os.path.join(os.path.dirname(__file__), "data", "schema_before_migrations.sql")


def test_the_declared_head_is_the_scripts_head():
    assert script_heads([HUB]) == [HUB.head]
    assert script_heads([KERNEL, HUB]) == sorted([KERNEL.head, HUB.head])  # a branch of its own
    assert plugin.ck_migrations(kernel=None) == [HUB]


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    target = str(tmp_path / "k.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = connect(target)
    await db.open()
    await upgrade(db, [KERNEL, HUB])
    hub_store = HubStore(db, str(tmp_path / "published"))
    await hub_store.open()
    yield hub_store
    await db.close()


async def _workflow(store: HubStore, name: str = "wf", owner: str = "ws:a", **kw) -> dict:
    return await store.create_workflow(owner=owner, created_by="u", name=name, description="", default_view="workflow",
                                       workflow_json={"nodes": [name]}, **kw)


async def test_versions_append_only_on_the_latest_base(store):
    wf = await _workflow(store)
    assert wf["latest_version"] == 1 and (await store.get_version(wf["id"]))["version"] == 1
    added = await store.add_version(wf["id"], 1, {"v": 2}, "u")
    assert added["version"] == 2 and load((await store.get_version(wf["id"]))["workflow_json"]) == {"v": 2}
    with pytest.raises(VersionConflict) as stale:
        await store.add_version(wf["id"], 1, {"v": 3}, "u")
    assert stale.value.current == 2
    # Two writers on the same base: one appends, the other is told the base is stale.
    results = await asyncio.gather(*(store.add_version(wf["id"], 2, {"w": n}, "u") for n in range(2)),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["VersionConflict", "dict"]
    assert (await store.add_version(wf["id"], None, {"v": 4}, "u"))["version"] == 4
    assert (await store.get_version(wf["id"], 1))["version"] == 1
    with pytest.raises(KeyError):
        await store.add_version("missing", None, {}, "u")


async def test_snapshots_number_up_under_one_share(store):
    wf = await _workflow(store)
    version = await store.get_version(wf["id"])
    first, second = await asyncio.gather(*(store.publish(workflow=wf, version=version, name=f"pub{n}", assets=[])
                                           for n in range(2)))
    assert first["share_id"] == second["share_id"]
    share_id = first["share_id"]
    assert [s["seq"] for s in await store.snapshots(share_id)] == [1, 2]
    assert (await store.share(share_id))["seq"] == 2
    await store.unpublish(share_id)
    assert await store.share(share_id) is None
    hidden = await store.share_of_workflow(wf["id"])
    assert hidden["unpublished_at"] is not None and hidden["listed"] == 0
    again = await store.publish(workflow=wf, version=version, name="back", assets=[{"id": "a"}], listed=True,
                                hub_fields={"tags": ["x"]})
    assert again["seq"] == 3 and again["unpublished_at"] is None and again["listed"] == 1
    assert load(again["assets"]) == [{"id": "a"}] and load(again["hub_fields"]) == {"tags": ["x"]}


async def test_listings_filter_and_search_without_case_or_wildcards(store):
    names = ["Cats at 50%", "cats_dogs", "CATSXDOGS", "Birds"]
    for n, name in enumerate(names):
        wf = await _workflow(store, name)
        await store.publish(workflow=wf, version=await store.get_version(wf["id"]), name=name, assets=[],
                            listed=True, profile_username="me" if n < 2 else "other",
                            hub_fields={"tags": ["t"] if n == 0 else []})
        time.sleep(0.002)  # distinct publish times: newest first

    async def found(**kw) -> list[str]:
        args = {"statuses": ["approved"], "search": None, "tag": None, "username": None, **kw}
        return [r["name"] for r in await store.listed_shares(**args)]

    assert await found() == names[::-1]
    assert await found(search="cats") == ["CATSXDOGS", "cats_dogs", "Cats at 50%"]
    assert await found(search="S_D") == ["cats_dogs"]  # "_" is not a wildcard
    assert await found(search="50%") == ["Cats at 50%"]
    assert await found(username="me") == ["cats_dogs", "Cats at 50%"]
    assert await found(tag="t") == ["Cats at 50%"]
    assert await found(statuses=["pending"]) == []


async def test_saved_workflows_list_sort_and_page(store):
    for name in ("banana", "Cherry", "apple"):
        await _workflow(store, name)
    await _workflow(store, "elsewhere", owner="ws:b")

    async def names(**kw) -> tuple[list[str], int]:
        args = {"name": None, "default_view": None, "sort": "name", "order": "asc", "limit": 10, "offset": 0, **kw}
        rows, total = await store.list_workflows("ws:a", **args)
        return [r["name"] for r in rows], total

    assert await names() == (["apple", "banana", "Cherry"], 3)
    assert await names(order="desc", limit=2, offset=1) == (["banana", "apple"], 3)
    assert await names(name="ERR") == (["Cherry"], 1)
    assert (await names(sort="create_time"))[0] == ["banana", "Cherry", "apple"]
    assert await names(default_view="app") == ([], 0)


async def test_one_live_workflow_per_tracked_file(store):
    first = await _workflow(store, "f", source_file="a.json")
    with pytest.raises(Exception) as taken:
        await _workflow(store, "f2", source_file="a.json")
    assert is_conflict(taken.value)
    assert (await store.workflow_for_file("ws:a", "a.json"))["id"] == first["id"]
    await store.delete_workflow(first["id"])
    assert await store.get_workflow(first["id"]) is None
    assert (await _workflow(store, "f3", source_file="a.json"))["name"] == "f3"  # the deleted one no longer counts


async def test_profiles_labels_uploads_and_feedback(store):
    profile = {"username": "alice", "owner": "ws:a", "display_name": None, "description": None, "avatar_url": None,
               "website_urls": "[]", "created_at": time.time()}
    assert await store.add_profile(profile) is None
    assert await store.add_profile({**profile, "username": "alice2"}) == "owner"
    assert await store.add_profile({**profile, "owner": "ws:b"}) == "username"
    await store.update_profile("alice", {"display_name": "Alice", "avatar_url": "/api/hub/media/x.png"})
    assert (await store.profile_of("ws:a"))["display_name"] == "Alice"
    assert (await store.profile_by_name("ALICE")) is None  # profile names are exact

    await store.seed_labels(DEFAULT_LABELS)
    await store.seed_labels(DEFAULT_LABELS)
    assert len(await store.labels()) == len(DEFAULT_LABELS)
    assert {r["type"] for r in await store.labels("model")} == {"model"}

    await store.add_upload({"token": "t1", "owner": "ws:a", "filename": "a.png", "content_type": "image/png",
                            "stored_name": "t1.png", "expires_at": int(time.time()) + 60})
    assert (await store.upload("t1"))["uploaded_at"] is None
    claims = []
    for _ in range(2):
        async with store.transaction() as tx:
            claims.append(await store.claim_upload(tx, "t1"))
    assert claims == [True, False] and (await store.upload("t1"))["uploaded_at"] is not None

    await store.add_feedback({"id": "f1", "owner": "ws:a", "type": "general", "content": None, "rating": None,
                              "metadata": "{}", "created_at": time.time()})


@pytest.mark.sqlite_file
async def test_a_sqlite_file_from_before_migrations_is_adopted(tmp_path):
    old, new = str(tmp_path / "old.db"), str(tmp_path / "new.db")
    conn = sqlite3.connect(old)
    with open(OLD_SCHEMA, encoding="utf-8") as f:
        conn.executescript(f.read())
    conn.execute("INSERT INTO hub_labels (type, name, display_name) VALUES ('tag', 'mine', 'Mine')")
    conn.commit()
    conn.close()
    for path in (old, new):
        db = connect(path)
        await db.open()
        try:
            assert "hub0001" in await upgrade(db, [KERNEL, HUB])
            if path == old:
                assert [r["name"] for r in await HubStore(db).labels("tag")] == ["mine"]
        finally:
            await db.close()
    # the first revision is the schema the hub made itself
    assert sqlite_schema(old, "hub_", slice(2, 5)) == sqlite_schema(new, "hub_", slice(2, 5))
