"""The leases on both back-ends (SQLite, PostgreSQL): taken with the queue row, held while renewed, taken over
once they run out, refused a third time, and taken by exactly one of several workers trying at once."""

from __future__ import annotations

import asyncio

import pytest
from comfy_kernel_cluster.claims import DEAD_TWICE, GONE, HELD, RUN, Claims
from comfy_kernel_cluster.migrations import CLUSTER
from sqlalchemy import select

from comfy_kernel.execution.store import Store, queue_table
from comfy_kernel.migrations import KERNEL
from comfy_kernel.storage import connect, upgrade
from comfy_kernel.storage.migrations import script_heads

RESULT = {"outputs": {}, "meta": {}, "status": {"status_str": "success", "completed": True, "messages": []}}


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> str:
    return str(tmp_path / "k.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
async def db(target):
    database = connect(target)
    await database.open()
    await upgrade(database, [KERNEL, CLUSTER])
    yield database
    await database.close()


async def claims_of(db, worker: str, lease: float = 30.0) -> Claims:
    found = Claims(db, worker, lease)
    await found.open()
    return found


def item(n: int) -> list:
    return [n, f"p{n}", {}, {"client_id": "c"}, []]


def test_the_declared_head_is_the_newest_script():
    assert script_heads([CLUSTER]) == [CLUSTER.head]


async def test_a_lease_is_held_renewed_taken_over_and_refused_a_third_time(db):
    store = Store(db)
    await store.open()
    await store.enqueue("o", item(1))
    a, b = await claims_of(db, "a", lease=0.3), await claims_of(db, "b", lease=0.3)
    verdict, row = await a.claim("p1")
    assert verdict == RUN and row["owner"] == "o" and row["item"][1] == "p1" and row["attempts"] == 0
    assert (await b.claim("p1"))[0] == HELD
    assert [r[2] for r in await a.queue_rows()] == ["running"] and await a.stale() == []
    await asyncio.sleep(0.2)
    await a.renew("p1")
    await b.renew("p1")  # not b's lease: changes nothing
    await asyncio.sleep(0.2)
    assert (await b.claim("p1"))[0] == HELD  # renewed 0.2 s ago
    await asyncio.sleep(0.4)  # a stopped renewing (died)
    assert [r[0] for r in await a.stale()] == ["o"]
    verdict, row = await b.claim("p1")
    assert verdict == RUN and row["attempts"] == 1
    await asyncio.sleep(0.4)
    verdict, row = await a.claim("p1")  # both workers died under it: not run a third time
    assert verdict == DEAD_TWICE and row["attempts"] == 2
    await b.release("p1")
    await store.finish("o", row["item"], RESULT, 1.0, 2.0)
    assert await a.claim("p1") == (GONE, None)
    assert await a.queue_rows() == [] and await a.stale() == []


async def test_one_worker_of_several_takes_a_prompt(target, db):
    """Workers of three processes (three connections) claim the same prompts at once: each prompt is run by one."""
    store = Store(db)
    await store.open()
    for n in range(8):
        await store.enqueue("o", item(n))
    others = [connect(target) for _ in range(2)]
    for other in others:
        await other.open()
    try:
        workers = [await claims_of(d, f"w{i}") for i, d in enumerate([db, *others])]
        verdicts = await asyncio.gather(*(w.claim(f"p{n}") for n in range(8) for w in workers))
        for n in range(8):
            mine = [v[0] for v in verdicts[n * 3:(n + 1) * 3]]
            assert sorted(mine) == [HELD, HELD, RUN], (n, mine)
        assert {r[2] for r in await workers[0].queue_rows()} == {"running"}
        assert [r[0] for r in await db.fetch_all(select(queue_table.c.attempts))] == [1] * 8
    finally:
        for other in others:
            await other.close()
