"""``POST /api/prompt?wait=`` and ``GET /api/jobs/{id}/result`` through a real server."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from .integration_helpers import failing_prompt, image_prompt, sleep_prompt, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("wait"))
    yield srv
    srv.stop()
    srv.client.close()


def test_wait_answers_with_outputs_urls_status_and_timings(server):
    r = server.post("/api/prompt?wait=60", json={"prompt": image_prompt(77)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "completed" and body["node_errors"] == {} and isinstance(body["number"], int)
    item = body["outputs"]["3"]["images"][0]
    assert item["type"] == "output" and item["subfolder"] == "tests"
    assert item["url"].startswith(server.url + "/api/view?")
    image = httpx.get(item["url"])
    assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
    timings = body["timings"]
    assert timings["queued_at"] <= timings["started_at"] <= timings["finished_at"]
    assert timings["execution_seconds"] >= 0 and timings["total_seconds"] >= timings["execution_seconds"]
    assert body["url"] == f"{server.url}/api/jobs/{body['prompt_id']}"
    # The same document later, from the job's result route.
    again = server.get(f"/api/jobs/{body['prompt_id']}/result")
    assert again.status_code == 200
    assert {k: v for k, v in again.json().items() if k not in ("number", "node_errors")} == \
        {k: v for k, v in body.items() if k not in ("number", "node_errors")}


def test_wait_timeout_answers_202_with_the_job_url_and_the_job_finishes(server):
    r = server.post("/api/prompt?wait=0.3", json={"prompt": sleep_prompt(1.5)})
    assert r.status_code == 202, r.text
    body = r.json()
    prompt_id = body["prompt_id"]
    assert body["status"] in ("pending", "in_progress")
    assert body["url"] == r.headers["location"] == f"{server.url}/api/jobs/{prompt_id}"
    assert server.get(body["url"].replace(server.url, "")).status_code == 200
    done = server.get(f"/api/jobs/{prompt_id}/result", params={"wait": 30})
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert done.json()["outputs"]["2"] == {"text": ["1"]}


def test_failed_job_reports_its_error(server):
    r = server.post("/api/prompt", params={"wait": 30}, json={"prompt": failing_prompt()})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "failed"
    assert body["execution_error"]["node_id"] == "2" and body["execution_error"]["exception_type"]


def test_prefer_header_asks_for_a_wait(server):
    r = server.post("/api/prompt", headers={"Prefer": "wait=30"}, json={"prompt": image_prompt(5)})
    assert r.status_code == 200 and r.json()["status"] == "completed"


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", ""])
def test_bad_wait_is_a_400_and_queues_nothing(server, value):
    before = server.get("/api/jobs").json()["pagination"]["total"]
    r = server.post("/api/prompt", params={"wait": value}, json={"prompt": image_prompt(1)})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_parameter"
    assert server.get("/api/jobs").json()["pagination"]["total"] == before


def test_validation_errors_are_unchanged_by_wait(server):
    r = server.post("/api/prompt?wait=10", json={"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert r.status_code == 400 and "node_errors" in r.json()


def test_client_disconnect_does_not_cancel_the_job(server):
    """Send a waiting request on a raw socket, hang up, and see the job finish anyway."""
    import json

    prompt_id = "disconnect-" + str(time.time())
    body = json.dumps({"prompt": sleep_prompt(1.0, value=9), "prompt_id": prompt_id}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /api/prompt?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.3)
    done = server.get(f"/api/jobs/{prompt_id}/result", params={"wait": 30})
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert done.json()["outputs"]["2"] == {"text": ["9"]}


def test_result_of_unknown_job_is_404(server):
    assert server.get("/api/jobs/nope/result").status_code == 404
    assert server.get("/api/jobs/nope/result?wait=1").status_code == 404


def test_cancelled_pending_job_ends_the_wait(server):
    blocker = server.post("/api/prompt", json={"prompt": sleep_prompt(1.5, value=2)}).json()["prompt_id"]
    pending = server.post("/api/prompt", json={"prompt": sleep_prompt(0.1, value=3)}).json()["prompt_id"]
    assert server.post(f"/api/jobs/{pending}/cancel").json() == {"cancelled": True}
    r = server.get(f"/api/jobs/{pending}/result", params={"wait": 10})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert server.get(f"/api/jobs/{blocker}/result", params={"wait": 30}).json()["status"] == "completed"
