"""Several workers run several prompts at once; one worker keeps strict queue order."""

from __future__ import annotations

import time

from tests.conftest import KERNEL_ONLY
from tests.e2e.execution_helpers import Client, start_server


def sleeper(value: int, seconds: float) -> dict:
    return {"1": {"class_type": "TestSyncSleep", "inputs": {"value": value, "seconds": seconds}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def _run_two(server, seconds: float) -> tuple[float, list[str], list[dict]]:
    client = Client(server)
    try:
        client.run(sleeper(0, 0.01))  # workers are started on the first prompt
        deadline = time.monotonic() + 30  # ...and let its worker finish recording it
        while server.get("/queue").json()["queue_running"] and time.monotonic() < deadline:
            time.sleep(0.02)
        start = time.perf_counter()
        ids = [client.queue(sleeper(i + 1, seconds)).json()["prompt_id"] for i in range(2)]
        results = [client.wait(pid, timeout=60) for pid in ids]
        elapsed = time.perf_counter() - start
    finally:
        client.close()
    order = [r.prompt_id for r in results]
    return elapsed, order, [client.history(pid) for pid in ids]


def _span(entry: dict, event: str) -> int:
    return next(m for m in entry["status"]["messages"] if m[0] == event)[1]["timestamp"]


def test_two_workers_run_two_prompts_in_parallel(tmp_path):
    server = start_server(tmp_path / "base", "--workers", "2", *KERNEL_ONLY)
    try:
        _, _, history = _run_two(server, 1.5)
    finally:
        server.stop()
    assert all(h["status"]["status_str"] == "success" for h in history)
    assert [h["outputs"]["2"]["text"] for h in history] == [["1"], ["2"]]
    # Each prompt sleeps 1.5 s in a node; on two workers the second starts before the first ends.
    first, second = history
    assert _span(second, "execution_start") < _span(first, "execution_success")


def test_one_worker_runs_prompts_one_after_another(tmp_path):
    server = start_server(tmp_path / "base", *KERNEL_ONLY)
    try:
        elapsed, _, history = _run_two(server, 0.8)
        starts = [_span(h, "execution_start") for h in history]
        ends = [_span(h, "execution_success") for h in history]
    finally:
        server.stop()
    assert elapsed >= 1.6
    assert starts[1] >= ends[0]  # the second started only after the first finished
