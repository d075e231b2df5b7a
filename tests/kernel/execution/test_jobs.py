"""The job feed: numbering, replay, bounds, previews from binary frames, waits and the end of a job."""

from __future__ import annotations

import asyncio
import struct
import threading

import orjson

from comfy_kernel.execution import jobs
from comfy_kernel.execution.jobs import JobFeed, parse_frame


async def test_messages_from_a_worker_thread_are_numbered_in_order():
    feed = JobFeed()
    feed.start(asyncio.get_running_loop())

    def worker() -> None:
        for n in range(200):
            feed.record("p", "progress", {"value": n, "max": 200, "node": "3"})

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    await asyncio.sleep(0.05)
    log = feed.finish("p", "alice", "completed")
    assert [seq for seq, _, _ in log.after(0)] == list(range(1, 202))
    assert [d["value"] for _, e, d in log.after(0) if e == "progress"] == list(range(200))
    assert log.after(0)[-1][1:] == ("executing", {"node": None, "prompt_id": "p"})
    assert log.after(199)[0][0] == 200 and log.after(201) == []
    assert log.owner == "alice" and log.status == "completed" and log.current_node == "3"


async def test_waits_and_followers_see_the_end(monkeypatch):
    feed = JobFeed()
    feed.start(asyncio.get_running_loop())
    feed.queued("p", "bob")
    log = feed.open("p", "bob")
    assert await feed.wait(log, 0.05) is False
    seen: list[tuple] = []

    async def follow() -> None:
        async for item in feed.follow(log, 0, idle=0.05):
            seen.append(item)

    task = asyncio.ensure_future(follow())
    await asyncio.sleep(0.12)  # at least one heartbeat (None) while nothing happens
    feed.record("p", "execution_start", {"prompt_id": "p"})
    waiter = asyncio.ensure_future(feed.wait(log, 5))
    feed.finish("p", "bob", "failed")
    assert await waiter is True
    await asyncio.wait_for(task, 1)
    assert None in seen
    assert [item[1] for item in seen if item is not None] == ["execution_start", "executing"]
    # Queuing the same id again starts a fresh log.
    feed.queued("p", "bob")
    assert feed.get("p") is not log and not feed.get("p").done


async def test_bounds_on_messages_previews_and_finished_jobs(monkeypatch):
    monkeypatch.setattr(jobs, "EVENTS_KEPT", 5)
    monkeypatch.setattr(jobs, "PREVIEWS_KEPT", 2)
    monkeypatch.setattr(jobs, "FINISHED_KEPT", 3)
    feed = JobFeed()
    feed.start(asyncio.get_running_loop())
    for n in range(8):
        feed.record("p", "progress", {"value": n})
    log = feed.open("p", None)
    assert log.first_seq == 4 and [s for s, _, _ in log.after(0)] == [4, 5, 6, 7, 8]
    assert [s for s, _, _ in log.after(6)] == [7, 8]
    for n in range(3):
        assert log.add_preview("image/png", bytes([n])) == n + 1
    assert list(log.previews) == [2, 3]
    for n in range(5):
        feed.finish(f"j{n}", None, "completed")
    assert sorted(k for k in feed.logs if k.startswith("j")) == ["j2", "j3", "j4"]
    monkeypatch.setattr(jobs, "FINISHED_TTL_S", 0.0)
    feed.finish("late", None, "completed")
    assert not [k for k in feed.logs if k.startswith("j")]


async def test_binary_frames_become_messages():
    feed = JobFeed()
    feed.start(asyncio.get_running_loop())
    feed.record("p", "executing", {"node": "7", "prompt_id": "p"})
    feed.record_bytes("p", 1, struct.pack(">I", 2) + b"PNGDATA")
    meta = orjson.dumps({"node_id": "9", "display_node_id": "9", "prompt_id": "p", "image_type": "image/webp"})
    feed.record_bytes("p", 4, struct.pack(">I", len(meta)) + meta + b"WEBP")
    feed.record_bytes("p", 3, struct.pack(">I", 1) + b"5" + "hälfte".encode())
    feed.record_bytes("p", 4, b"\x00")  # truncated: ignored
    log = feed.open("p", None)
    kinds = [(e, d) for _, e, d in log.after(1)]
    assert kinds[0] == ("preview", {"node_id": "7", "display_node_id": "7", "prompt_id": "p",
                                    "image_type": "image/png", "url": "/api/jobs/p/previews/1"})
    assert kinds[1][1]["node_id"] == "9" and kinds[1][1]["image_type"] == "image/webp"
    assert kinds[2] == ("progress_text", {"nodeId": "5", "text": "hälfte", "prompt_id": "p"})
    assert len(kinds) == 3
    assert log.previews[1] == ("image/png", b"PNGDATA") and log.previews[2] == ("image/webp", b"WEBP")
    assert parse_frame("p", 99, b"") is None
