"""The store's writes on the server loop never stall it behind another connection's lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from comfy_kernel.execution.store import Store


async def test_locked_database_does_not_block_the_loop(tmp_path):
    path = str(tmp_path / "k.db")
    store = Store(path)
    await store.open()
    try:
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another plugin's long write transaction
        release = threading.Timer(0.6, lambda: other.execute("COMMIT"))
        release.start()

        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        await store.enqueue("owner", [1, "p1", {"1": {}}, {}, ["1"]])
        elapsed = time.perf_counter() - start
        stop = True
        await task
        release.join()
        other.close()

        assert elapsed >= 0.5  # it waited for the lock...
        assert ticks >= 20  # ...without freezing the event loop meanwhile
        requeue, failed = await store.recover()
        assert [item[1] for _, item in requeue] == ["p1"] and failed == []
    finally:
        await store.close()
