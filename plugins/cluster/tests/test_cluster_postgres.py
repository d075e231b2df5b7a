"""The cluster on PostgreSQL, and PostgreSQL itself killed (kill -9) under it while prompts run and wait.

The server here is the module's own (not the test run's), so killing it touches no other test; it runs in
both test modes.
"""

from __future__ import annotations

import threading
import time

import pytest
from cluster_helpers import Cluster, history_rows, leases, sleeper, wait_history, wait_running

from comfy_kernel.testing import PostgresServer, postgres_available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not installed")]


@pytest.fixture(scope="module")
def postgres_cluster(tmp_path_factory):
    with PostgresServer(tmp_path_factory.mktemp("cluster-postgres")) as server:
        cluster = Cluster(tmp_path_factory.mktemp("cluster-on-postgres"), fronts=2, workers=2,
                          database=server.new_database("cluster"))
        try:
            cluster.start()
            yield server, cluster
        finally:
            cluster.stop()


def test_postgres_killed_under_a_running_cluster_loses_and_duplicates_nothing(postgres_cluster):
    server, cluster = postgres_cluster
    a, b = cluster.fronts
    warm = a.post("/prompt", json={"prompt": sleeper(700, 0.0)}).json()["prompt_id"]
    assert wait_history(b, warm)["status"]["status_str"] == "success"
    before = len(a.get("/history").json())
    running = a.post("/prompt", json={"prompt": sleeper(701, 3.0)}).json()["prompt_id"]
    wait_running(b, {running})
    queued = [a.post("/prompt", json={"prompt": sleeper(710 + i, 0.2)}).json()["prompt_id"] for i in range(4)]
    server.kill()
    # accepted while the database is down: the request waits for it to come back
    during: list[str] = []
    post = threading.Thread(target=lambda: during.append(
        b.post("/prompt", json={"prompt": sleeper(720, 0.0)}).json()["prompt_id"]), daemon=True)
    post.start()
    time.sleep(2.0)  # longer than --ack-wait: workers' claims and renewals fail or wait meanwhile
    server.start()
    post.join(60)
    assert len(during) == 1
    for pid in [running, *queued, *during]:
        assert wait_history(b, pid, timeout=90)["status"]["status_str"] == "success", pid
    assert all(history_rows(cluster, pid) == 1 for pid in [running, *queued, *during])
    history = b.get("/history").json()
    assert len(history) == before + 6 and a.get("/history").json() == history
    deadline = time.monotonic() + 10
    while (leases(cluster) or a.get("/queue").json()["queue_running"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leases(cluster) == 0
    assert a.get("/queue").json() == b.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    # and the cluster goes on as before
    after = b.post("/prompt", json={"prompt": sleeper(730, 0.0)}).json()["prompt_id"]
    assert wait_history(a, after)["status"]["status_str"] == "success"
