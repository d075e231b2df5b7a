"""Crashes of a whole process: a prompt whose worker dies twice, and a front-end killed with prompts queued."""

from __future__ import annotations

import time

import pytest
from cluster_helpers import history_rows, lease_holder, sleeper, wait_history, wait_running

from comfy_kernel.testing import ServerProcess

pytestmark = pytest.mark.slow


def holder_of(cluster, prompt_id: str, other_than: str | None = None, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lease_holder(cluster, prompt_id)
        if holder and holder != other_than:
            return holder
        time.sleep(0.05)
    raise TimeoutError(prompt_id)


def kill_holder(cluster, holder: str) -> None:
    victim = next(w for w in cluster.workers if f"-{w.pid}-" in holder)
    victim.kill()
    cluster.workers.remove(victim)


def test_a_prompt_whose_worker_dies_twice_is_recorded_failed(cluster):
    a, b = cluster.fronts
    pid = a.post("/prompt", json={"prompt": sleeper(21, 30.0)}).json()["prompt_id"]
    wait_running(b, {pid})
    first = holder_of(cluster, pid)
    kill_holder(cluster, first)
    second = holder_of(cluster, pid, other_than=first, timeout=30)  # redelivered to another worker
    kill_holder(cluster, second)
    hist = wait_history(b, pid, timeout=40)  # the third worker does not run it a third time
    assert hist["status"]["status_str"] == "error"
    assert hist["status"]["messages"][-1][1]["exception_type"] == "ServerCrash"
    assert history_rows(cluster, pid) == 1
    assert b.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    ok = b.post("/prompt", json={"prompt": sleeper(22, 0.0)}).json()["prompt_id"]
    assert wait_history(a, ok)["status"]["status_str"] == "success"


def test_front_end_killed_with_prompts_queued_loses_nothing(cluster):
    a, b = cluster.fronts
    cluster.workers.append(cluster.add_worker().wait_ready())
    before = len(b.get("/history").json())
    queued = [a.post("/prompt", json={"prompt": sleeper(400 + i, 0.3)}).json()["prompt_id"] for i in range(6)]
    a.kill()
    for pid in queued:
        assert wait_history(b, pid, timeout=40)["status"]["status_str"] == "success"
    restarted = ServerProcess(a.base_dir, *a.args, port=a.port).start()
    cluster.fronts[0] = restarted
    try:
        assert restarted.get("/history").json() == b.get("/history").json()
        assert len(b.get("/history").json()) == before + len(queued)
        assert all(history_rows(cluster, pid) == 1 for pid in queued)
    finally:
        a.client.close()
