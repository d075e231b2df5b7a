"""Crash durability: kill -9 a real server with prompts queued, start it again, they run.

Each test runs on both databases: the embedded SQLite file and a PostgreSQL
server (started for the test run), and with PostgreSQL also across a kill -9
of the database server itself.
"""

from __future__ import annotations

import time

import pytest

from comfy_kernel.testing import ServerProcess, run_sql, server_database

from .execution_helpers import install_pack


def sleeper(value: int, seconds: float) -> dict:
    return {"1": {"class_type": "TestSyncSleep", "inputs": {"value": value, "seconds": seconds}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def wait_history(server: ServerProcess, prompt_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = server.get(f"/history/{prompt_id}").json()
        if body:
            return body[prompt_id]
        time.sleep(0.05)
    raise TimeoutError(prompt_id)


def wait_running(server: ServerProcess, prompt_id: str, attempt: int = 1, timeout: float = 20) -> None:
    """Until /queue shows the prompt running and its row records run ``attempt`` (what a kill must find).

    /queue counts a prompt as running from the moment it leaves the queue, a little before its
    row is marked; a kill in that moment leaves a prompt that never started, rightly run again.
    """
    deadline = time.monotonic() + timeout
    target = database_of(server)
    while time.monotonic() < deadline:
        running = server.get("/queue").json()["queue_running"]
        if running and running[0][1] == prompt_id:
            rows = run_sql(target, "SELECT attempts FROM ck_queue WHERE prompt_id = :pid AND state = 'running'",
                           {"pid": prompt_id})
            if rows and rows[0][0] >= attempt:
                return
        time.sleep(0.02)
    raise TimeoutError(prompt_id)


def database_of(server: ServerProcess) -> str:
    if "--database" in server.args:
        return server.args[server.args.index("--database") + 1]
    return server_database(server.base_dir)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request) -> list[str]:
    """``serve`` arguments naming the database (none: the default SQLite file)."""
    if request.param == "sqlite":
        return []
    return ["--database", request.getfixturevalue("postgres_url"), "--disable-plugins", SQLITE_PLUGINS]


SQLITE_PLUGINS = "assets,billing,hub,manager,multiuser"
"""Plugins that keep their tables in SQLite themselves (they refuse a PostgreSQL database)."""


@pytest.mark.slow
def test_kill9_with_pending_prompts_then_restart(tmp_path, database):
    base = tmp_path / "base"
    install_pack(base)
    port = None
    server = ServerProcess(base, *database).start()
    port = server.port
    running = server.post("/prompt", json={"prompt": sleeper(1, 5.0)}).json()["prompt_id"]
    pending = [server.post("/prompt", json={"prompt": sleeper(10 + i, 0.0)}).json()["prompt_id"] for i in range(3)]
    wait_running(server, running)
    server.kill()

    server = ServerProcess(base, *database, port=port).start()
    try:
        for pid in pending:
            assert wait_history(server, pid)["status"]["status_str"] == "success"
        # the prompt that was running is queued again once, and runs
        hist = wait_history(server, running)
        assert hist["status"]["status_str"] == "success" and hist["outputs"]["2"] == {"text": ["1"]}
        assert len(server.get("/history").json()) == 4  # nothing lost, nothing duplicated
    finally:
        server.stop()


@pytest.mark.slow
def test_prompt_that_dies_twice_is_marked_failed(tmp_path, database):
    base = tmp_path / "base"
    install_pack(base)
    server = ServerProcess(base, *database).start()
    pid = server.post("/prompt", json={"prompt": sleeper(2, 30.0)}).json()["prompt_id"]
    wait_running(server, pid)
    server.kill()
    server = ServerProcess(base, *database).start()
    wait_running(server, pid, attempt=2)  # re-queued once
    server.kill()
    server = ServerProcess(base, *database).start()
    try:
        hist = wait_history(server, pid)
        assert hist["status"]["status_str"] == "error"
        assert hist["status"]["messages"][-1][0] == "execution_error"
        assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}
        ok = server.post("/prompt", json={"prompt": sleeper(3, 0.0)}).json()["prompt_id"]
        assert wait_history(server, ok)["status"]["status_str"] == "success"
    finally:
        server.stop()


@pytest.mark.slow
def test_postgres_killed_and_restarted_under_a_running_server(tmp_path, postgres):
    """kill -9 of PostgreSQL while prompts are queued and running: once it is back, each is recorded once."""
    base = tmp_path / "base"
    install_pack(base)
    url = postgres.new_database("t_pg_killed")
    server = ServerProcess(base, "--database", url, "--disable-plugins", SQLITE_PLUGINS).start()
    try:
        running = server.post("/prompt", json={"prompt": sleeper(1, 1.5)}).json()["prompt_id"]
        pending = [server.post("/prompt", json={"prompt": sleeper(10 + i, 0.0)}).json()["prompt_id"]
                   for i in range(3)]
        wait_running(server, running)
        postgres.kill()
        time.sleep(0.5)
        postgres.start()
        later = server.post("/prompt", json={"prompt": sleeper(20, 0.0)}).json()["prompt_id"]
        for pid in [running, *pending, later]:
            assert wait_history(server, pid)["status"]["status_str"] == "success"
        assert len(server.get("/history").json()) == 5
        assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    finally:
        server.stop()
