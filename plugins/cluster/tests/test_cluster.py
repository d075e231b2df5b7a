"""The cluster end to end: NATS server, two front-ends and three workers as real processes."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from cluster_helpers import history_rows, lease_holder, leases, sleeper, wait_history, wait_running

pytestmark = pytest.mark.slow


def progress(value: int, steps: int, delay: float) -> dict:
    return {"1": {"class_type": "TestProgress", "inputs": {"value": value, "steps": steps, "delay": delay}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def test_queued_on_a_runs_on_a_worker_and_b_sees_its_events(cluster):
    a, b = cluster.fronts
    client_id = uuid.uuid4().hex
    messages: list = []
    with b.ws(client_id=client_id) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "status"
        pid = a.post("/prompt", json={"prompt": progress(7, 3, 0.05), "client_id": client_id}).json()["prompt_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frame = ws.recv(timeout=30)
            if isinstance(frame, bytes):
                continue
            msg = json.loads(frame)
            messages.append((msg["type"], msg["data"]))
            if msg["type"] == "executing" and msg["data"]["node"] is None:
                break
    kinds = [kind for kind, data in messages if data.get("prompt_id") == pid]
    assert kinds[0] == "execution_start" and "executed" in kinds and "execution_success" in kinds
    assert [d["value"] for k, d in messages if k == "progress"] == [1, 2, 3]
    assert kinds[-1] == "executing"
    assert ("executed", "2") in [(k, d.get("node")) for k, d in messages]
    on_a, on_b = wait_history(a, pid), wait_history(b, pid)
    assert on_a == on_b and on_a["outputs"]["2"] == {"text": ["7"]}
    assert a.get("/history").json() == b.get("/history").json()
    job_a, job_b = a.get(f"/api/jobs/{pid}").json(), b.get(f"/api/jobs/{pid}").json()
    assert job_a["status"] == job_b["status"] == "completed"
    # run-and-wait on one front-end, result read on the other
    waited = b.post("/api/prompt?wait=30", json={"prompt": sleeper(8, 0.1)})
    assert waited.status_code == 200, waited.text
    waited_id = waited.json()["prompt_id"]
    assert a.get(f"/api/jobs/{waited_id}").json()["status"] == "completed"
    assert wait_history(a, waited_id)["outputs"]["2"] == {"text": ["8"]}
    again = a.post("/api/prompt?wait=30", json={"prompt": sleeper(9, 0.0), "prompt_id": waited_id})
    assert again.status_code == 200, again.text  # the same id queued again runs again
    assert wait_history(b, waited_id)["outputs"]["2"] == {"text": ["9"]} and history_rows(cluster, waited_id) == 1
    # every worker announced what it can run
    workers = b.get("/api/cluster").json()["workers"]
    assert len(workers) == 3
    assert all("TestSyncSleep" in w["nodes"] and w["devices"][0]["type"] == "cpu" for w in workers)
    assert all(w["devices"][0]["memory_free"] for w in workers)
    assert a.post("/free", json={"unload_models": True, "free_memory": True}).status_code == 200
    metrics = b.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    assert "ck_workers 3" in lines and "ck_queue_pending 0" in lines
    assert 'ck_prompts_finished_total{status="completed"} 3' in lines  # seen on B, queued on A and on B
    assert sum(line.startswith("ck_worker_busy{") for line in lines) == 3
    busy = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("ck_worker_busy_seconds_total{")]
    assert len(busy) == 3 and sum(busy) >= 0.1  # the 0.1 s sleeper ran somewhere
    assert sum(line.startswith("ck_device_memory_total_bytes{") for line in lines) == 3


def test_prompts_spread_over_workers_and_front_delete_and_interrupt_cross_front_ends(cluster):
    a, b = cluster.fronts
    long = [a.post("/prompt", json={"prompt": progress(100 + i, 200, 0.05)}).json()["prompt_id"] for i in range(3)]
    wait_running(b, set(long))  # three workers, three prompts at once
    waiting = a.post("/prompt", json={"prompt": sleeper(5, 0.0)}).json()["prompt_id"]
    deadline = time.monotonic() + 5
    while waiting not in {i[1] for i in b.get("/queue").json()["queue_pending"]}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    later = a.post("/prompt", json={"prompt": sleeper(6, 0.0)}).json()["prompt_id"]
    first = b.post("/prompt", json={"prompt": sleeper(7, 0.0), "front": True}).json()["prompt_id"]
    deadline = time.monotonic() + 5
    while [i[1] for i in a.get("/queue").json()["queue_pending"]] != [first, waiting, later]:
        assert time.monotonic() < deadline, a.get("/queue").json()["queue_pending"]
        time.sleep(0.05)
    assert a.get(f"/api/jobs/{waiting}").json()["status"] == "pending"
    assert b.post("/queue", json={"delete": [waiting]}).status_code == 200
    assert b.post("/interrupt", json={"prompt_id": long[0]}).status_code == 200
    interrupted = wait_history(a, long[0])
    assert interrupted["status"]["status_str"] == "error"
    assert interrupted["status"]["messages"][-1][0] == "execution_interrupted"
    # the freed worker takes the prompt queued with front: true before the one queued earlier
    assert wait_history(a, first)["status"]["status_str"] == "success"
    assert b.post("/interrupt", json={}).status_code == 200  # a bare interrupt reaches every worker
    for pid in long[1:]:
        assert wait_history(a, pid)["status"]["messages"][-1][0] == "execution_interrupted"
    started = {pid: wait_history(b, pid)["status"]["messages"][0][1]["timestamp"] for pid in (first, later)}
    assert started[first] < started[later]
    time.sleep(1.0)
    assert a.get(f"/history/{waiting}").json() == {} and history_rows(cluster, waiting) == 0
    assert a.get(f"/api/jobs/{waiting}/result").json()["status"] == "cancelled"  # queued on A, deleted on B
    assert a.get("/queue").json() == b.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_jobs_cancel_on_b_reaches_prompts_queued_on_a(cluster):
    """POST /api/jobs/{id}/cancel: a running prompt is interrupted on its worker, a pending one leaves the
    queue, a finished one is a no-op (200, cancelled false), an unknown id 404, whichever front-end is asked."""
    a, b = cluster.fronts
    long = [a.post("/prompt", json={"prompt": progress(300 + i, 200, 0.05)}).json()["prompt_id"] for i in range(3)]
    wait_running(b, set(long))
    pending = a.post("/prompt", json={"prompt": sleeper(30, 0.0)}).json()["prompt_id"]
    deadline = time.monotonic() + 5
    while b.get(f"/api/jobs/{pending}").json().get("status") != "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert b.post(f"/api/jobs/{pending}/cancel").json() == {"cancelled": True}
    assert b.post(f"/api/jobs/{long[0]}/cancel").json() == {"cancelled": True}
    stopped = wait_history(a, long[0])
    assert stopped["status"]["messages"][-1][0] == "execution_interrupted"
    assert a.get(f"/api/jobs/{long[0]}").json()["status"] == "cancelled"
    assert b.post(f"/api/jobs/{long[0]}/cancel").json() == {"cancelled": False}  # finished: nothing to do
    assert b.post(f"/api/jobs/{uuid.uuid4()}/cancel").status_code == 404
    for pid in long[1:]:
        assert a.post(f"/api/jobs/{pid}/cancel").json() == {"cancelled": True}
        assert wait_history(b, pid)["status"]["messages"][-1][0] == "execution_interrupted"
    time.sleep(1.0)
    assert history_rows(cluster, pending) == 0 and a.get(f"/api/jobs/{pending}/result").json()["status"] == "cancelled"
    assert a.get("/queue").json() == b.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_worker_killed_mid_prompt_is_redelivered_and_recorded_once(cluster):
    a, b = cluster.fronts
    pid = a.post("/prompt", json={"prompt": sleeper(11, 5.0)}).json()["prompt_id"]
    wait_running(b, {pid})
    holder = lease_holder(cluster, pid)
    victim = next(w for w in cluster.workers if f"-{w.pid}-" in holder)
    victim.kill()
    cluster.workers.remove(victim)
    hist = wait_history(b, pid, timeout=40)
    assert hist["status"]["status_str"] == "success" and hist["outputs"]["2"] == {"text": ["11"]}
    assert history_rows(cluster, pid) == 1
    assert a.get("/history").json()[pid] == hist
    assert leases(cluster) == 0


def test_nats_killed_and_restarted_loses_nothing_queued(cluster):
    a, b = cluster.fronts
    before = len(a.get("/history").json())
    queued = [a.post("/prompt", json={"prompt": sleeper(200 + i, 0.3)}).json()["prompt_id"] for i in range(6)]
    cluster.nats.kill()
    # accepted while NATS is down: kept in the queue table, published when it is back
    during = b.post("/prompt", json={"prompt": sleeper(300, 0.0)})
    assert during.status_code == 200
    queued.append(during.json()["prompt_id"])
    # a front-end restarted while NATS is down serves, and takes prompts
    b.stop()
    b.start()
    during = b.post("/prompt", json={"prompt": sleeper(301, 0.0)})
    assert during.status_code == 200
    queued.append(during.json()["prompt_id"])
    cluster.nats.start()
    for pid in queued:
        assert wait_history(b, pid, timeout=60)["status"]["status_str"] == "success"
    assert all(history_rows(cluster, pid) == 1 for pid in queued)
    assert len(a.get("/history").json()) == before + len(queued)


def test_a_worker_drains_on_sigterm(cluster):
    a, _ = cluster.fronts
    worker = cluster.workers[0]
    others = cluster.workers[1:]
    for w in others:  # only the draining worker may take the prompt
        w.stop()
    pid = a.post("/prompt", json={"prompt": sleeper(12, 1.0)}).json()["prompt_id"]
    wait_running(a, {pid})
    done = threading.Event()
    threading.Thread(target=lambda: (worker.stop(), done.set()), daemon=True).start()
    assert wait_history(a, pid)["status"]["status_str"] == "success"
    assert done.wait(20)
    cluster.workers = []
