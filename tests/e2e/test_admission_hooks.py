"""The hooks a quota or billing plugin needs, over a real server: admission at /prompt,
a per-owner start filter on the queue, and per-node timings in ``ck_prompt_finished``."""

from __future__ import annotations

import json
import os
import time

import pytest

from comfy_kernel.testing import ServerProcess
from tests.fixtures.distributions import make_distribution

from .execution_helpers import install_pack

PLUGIN = '''
import json, os
from comfy_kernel import hookimpl
from comfy_kernel.http import HTTPError

LOG = os.environ["ADMISSION_TEST_LOG"]


def write(kind, data):
    with open(LOG, "a") as f:
        f.write(json.dumps({"kind": kind, **data}) + "\\n")


@hookimpl
def ck_admit_prompt(request, prompt_id, extra_data, owner):
    if extra_data.get("explode"):
        raise RuntimeError("this check is broken")
    if extra_data.get("deny"):
        raise HTTPError(402, "no", body={"error": {"type": "out_of_credits", "message": "Not enough credits",
                                                   "details": owner, "extra_info": {}}, "node_errors": {}})
    extra_data["stamp"] = {"owner": owner, "user": request.state.identity.user_id}


@hookimpl
def ck_prompt_may_start(event, kernel):
    ex = kernel.executor
    busy = [q for q in list(ex.running.values()) + list(ex.starting.values()) if q.owner == event["owner"]]
    return not busy


@hookimpl
def ck_prompt_finished(event):
    write("finished", {k: event[k] for k in ("prompt_id", "owner", "started", "ended", "worker", "extra_data")}
          | {"nodes": {k: dict(v) for k, v in event["nodes"].items()}})
'''


def sleeper(value: int, seconds: float) -> dict:
    return {"1": {"class_type": "TestSyncSleep", "inputs": {"value": value, "seconds": seconds}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def finished(log: str) -> dict[str, dict]:
    if not os.path.exists(log):
        return {}
    with open(log) as f:
        return {e["prompt_id"]: e for e in map(json.loads, f) if e["kind"] == "finished"}


def wait_finished(log: str, ids: list[str], timeout: float = 30) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = finished(log)
        if all(i in done for i in ids):
            return done
        time.sleep(0.05)
    raise TimeoutError(ids)


@pytest.fixture
def server(tmp_path):
    plugin_dir = make_distribution(tmp_path / "plugins", "admission-test", "admission_test_plugin", PLUGIN)
    base = tmp_path / "base"
    install_pack(base)
    log = str(tmp_path / "events.jsonl")
    env = {"PYTHONPATH": plugin_dir + os.pathsep + os.environ.get("PYTHONPATH", ""), "ADMISSION_TEST_LOG": log}
    with ServerProcess(base, "--multi-user", "--cpu", "--workers", "2", env=env) as srv:
        srv.events_log = log
        yield srv


@pytest.mark.slow
def test_admission_refuses_stamps_and_fails_closed(server):
    denied = server.post("/prompt", json={"prompt": sleeper(1, 0), "extra_data": {"deny": True}},
                         headers={"Comfy-User": "ann"})
    assert denied.status_code == 402
    assert denied.json() == {"error": {"type": "out_of_credits", "message": "Not enough credits",
                                       "details": "ann", "extra_info": {}}, "node_errors": {}}
    broken = server.post("/prompt", json={"prompt": sleeper(2, 0), "extra_data": {"explode": True}})
    assert broken.status_code == 503 and broken.json()["error"]["type"] == "admission_failed"
    assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    ok = server.post("/prompt", json={"prompt": sleeper(3, 0)}, headers={"Comfy-User": "ann"})
    assert ok.status_code == 200
    pid = ok.json()["prompt_id"]
    event = wait_finished(server.events_log, [pid])[pid]
    assert event["extra_data"]["stamp"] == {"owner": "ann", "user": "ann"}
    history = server.get(f"/history/{pid}", headers={"Comfy-User": "ann"}).json()[pid]
    assert history["prompt"][3]["stamp"] == {"owner": "ann", "user": "ann"}
    assert len(server.get("/history", headers={"Comfy-User": "ann"}).json()) == 1


@pytest.mark.slow
def test_start_filter_keeps_one_prompt_per_owner_running(server):
    ann = [server.post("/prompt", json={"prompt": sleeper(10 + i, 0.6)}, headers={"Comfy-User": "ann"})
           .json()["prompt_id"] for i in range(2)]
    bob = server.post("/prompt", json={"prompt": sleeper(20, 0.6)}, headers={"Comfy-User": "bob"}).json()["prompt_id"]
    done = wait_finished(server.events_log, ann + [bob])
    first, second = sorted((done[p] for p in ann), key=lambda e: e["started"])
    assert second["started"] >= first["ended"] - 0.01, "two prompts of one owner overlapped"
    b = done[bob]
    assert b["started"] < first["ended"] and first["started"] < b["ended"], "another owner was held back"


@pytest.mark.slow
def test_finished_event_has_node_timings_and_worker(server):
    pid = server.post("/prompt", json={"prompt": sleeper(30, 0.4)}).json()["prompt_id"]
    event = wait_finished(server.events_log, [pid])[pid]
    nodes = event["nodes"]
    assert set(nodes) == {"1", "2"}
    assert nodes["1"]["class_type"] == "TestSyncSleep" and not nodes["1"]["cached"]
    assert 0.39 <= nodes["1"]["wall_s"] < 2.0 and nodes["1"]["busy_s"] == nodes["1"]["wall_s"]
    assert nodes["2"]["wall_s"] < 0.2
    assert event["ended"] - event["started"] >= nodes["1"]["wall_s"]
    assert event["worker"]["type"] == "cpu" and event["worker"]["id"]
    # Each worker has its own cache: repeat until the same worker runs the prompt again.
    for _ in range(6):
        again = server.post("/prompt", json={"prompt": sleeper(30, 0.4)}).json()["prompt_id"]
        rerun = wait_finished(server.events_log, [again])[again]
        if rerun["worker"]["id"] == event["worker"]["id"]:
            break
    # Fully cached: the output node is answered from the cache and its inputs are never visited.
    assert set(rerun["nodes"]) == {"2"} and rerun["nodes"]["2"]["cached"] and rerun["nodes"]["2"]["wall_s"] < 0.1
