"""``/api/jobs`` speaks the frontend's units: every time is epoch milliseconds (frontend.md §5.2).

The queue panel groups jobs by day and shows durations from these fields; in
seconds, today's jobs landed in January 1970 and a 304 s run read "0.30s".
"""

from __future__ import annotations

import time

# Fields the frontend reads as epoch milliseconds: list items and the detail view.
LIST_TIMES = ("create_time", "execution_start_time", "execution_end_time")
DETAIL_TIMES = (*LIST_TIMES, "update_time")


def _prompt(seconds: float) -> dict:
    return {"1": {"class_type": "TestSyncSleep", "inputs": {"value": 1, "seconds": seconds}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def _is_now_in_ms(value, before: float, after: float) -> bool:
    return isinstance(value, int) and before * 1000 - 5 <= value <= after * 1000 + 5


def test_job_times_are_epoch_milliseconds(client, exec_server):
    empty = exec_server.get("/api/jobs").json()
    assert empty["jobs"] == [] and empty["pagination"]["limit"] >= 1  # the page size is at least 1
    assert exec_server.get("/api/jobs?limit=0").status_code == 400

    before = time.time()
    queued = client.queue(_prompt(0.3))
    assert queued.status_code == 200, queued.text
    prompt_id = queued.json()["prompt_id"]
    pending = exec_server.get(f"/api/jobs/{prompt_id}").json()
    assert _is_now_in_ms(pending["create_time"], before, time.time())
    assert pending["update_time"] == pending["create_time"]
    client.wait(prompt_id)
    after = time.time()

    listed = exec_server.get("/api/jobs?status=completed").json()["jobs"]
    job = next(j for j in listed if j["id"] == prompt_id)
    detail = exec_server.get(f"/api/jobs/{prompt_id}").json()
    for fields, item in ((LIST_TIMES, job), (DETAIL_TIMES, detail)):
        for name in fields:
            assert _is_now_in_ms(item[name], before, after), (name, item[name])
    assert job["create_time"] <= job["execution_start_time"] <= job["execution_end_time"]
    # a 0.3 s run lasts about 300 ms, not 0.3 of something
    assert 250 <= job["execution_end_time"] - job["execution_start_time"] < 10_000
    assert "_created" not in job and "_number" not in job
    # the execution messages history keeps (and the socket sent) carry epoch-millisecond timestamps too
    messages = exec_server.get(f"/history/{prompt_id}").json()[prompt_id]["status"]["messages"]
    stamps = {event: data["timestamp"] for event, data in messages if "timestamp" in data}
    assert {"execution_start", "execution_success"} <= set(stamps), messages
    assert all(_is_now_in_ms(value, before, after) for value in stamps.values()), stamps
