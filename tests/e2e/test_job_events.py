"""``GET /api/jobs/{id}/events``: a job's WebSocket messages as server-sent events, through a real server."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from .execution_helpers import Client
from .integration_helpers import image_prompt, read_sse, sleep_prompt, sse_events, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("events"))
    yield srv
    srv.stop()
    srv.client.close()


def ws_types(messages):
    return [(t, d.get("node") if isinstance(d, dict) else None) for t, d in messages if t != "status"]


def test_events_are_the_websocket_messages(server):
    client = Client(server)
    try:
        ws_run = client.run(image_prompt(40, steps=3))
    finally:
        client.close()
    events = sse_events(server, ws_run.prompt_id)
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    for event in events:
        assert event["data"]["type"] == event["event"]
    json_events = [(e["event"], e["data"]["data"]) for e in events if e["event"] != "preview"]
    assert ws_types(json_events) == ws_types(ws_run.messages)
    assert json_events == [(t, d) for t, d in ws_run.messages if t != "status"]
    assert events[-1]["event"] == "executing" and events[-1]["data"]["data"]["node"] is None


def test_previews_are_urls(server):
    prompt_id = server.post("/api/prompt", json={"prompt": image_prompt(41, steps=3)}).json()["prompt_id"]
    events = sse_events(server, prompt_id)
    previews = [e["data"]["data"] for e in events if e["event"] == "preview"]
    assert len(previews) == 3
    for n, preview in enumerate(previews, start=1):
        assert preview["node_id"] == "2" and preview["image_type"] == "image/jpeg"
        assert preview["url"] == f"{server.url}/api/jobs/{prompt_id}/previews/{n}"
        image = httpx.get(preview["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"
    # Each preview follows the progress update it belongs to.
    kinds = [e["event"] for e in events]
    assert kinds.index("preview") > kinds.index("progress")
    assert server.get(f"/api/jobs/{prompt_id}/previews/99").status_code == 404


def test_live_stream_follows_a_running_job_and_resumes(server):
    prompt = image_prompt(42, steps=4, delay=0.3)
    prompt_id = server.post("/api/prompt", json={"prompt": prompt}).json()["prompt_id"]
    first: list[dict] = []
    with httpx.stream("GET", f"{server.url}/api/jobs/{prompt_id}/events", timeout=30) as r:
        for event in read_sse(r):
            first.append(event)
            if event["event"] == "progress":
                break  # hang up in the middle of the run
    assert first[-1]["event"] == "progress"
    last_id = first[-1]["id"]
    with httpx.stream("GET", f"{server.url}/api/jobs/{prompt_id}/events",
                      headers={"Last-Event-ID": last_id}, timeout=30) as r:
        rest = list(read_sse(r))
    assert int(rest[0]["id"]) == int(last_id) + 1
    whole = sse_events(server, prompt_id)
    assert [e["id"] for e in first + rest] == [e["id"] for e in whole]
    assert [e["data"] for e in first + rest if e["event"] != "preview"] == \
        [e["data"] for e in whole if e["event"] != "preview"]
    # Resuming with the query parameter works too; nothing is left after the last id.
    tail = server.get(f"/api/jobs/{prompt_id}/events", params={"last_event_id": whole[-2]["id"]})
    assert [line for line in tail.text.splitlines() if line.startswith("id:")] == [f"id: {whole[-1]['id']}"]
    assert server.get(f"/api/jobs/{prompt_id}/events", headers={"Last-Event-ID": whole[-1]["id"]}).status_code == 204


def test_several_readers_and_a_pending_job(server):
    blocker = server.post("/api/prompt", json={"prompt": sleep_prompt(1.0, value=5)}).json()["prompt_id"]
    queued = server.post("/api/prompt", json={"prompt": image_prompt(43)}).json()["prompt_id"]
    results: dict[int, list] = {}

    def read(n: int) -> None:
        results[n] = sse_events(server, queued)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results[0] == results[1] == results[2]
    assert results[0][0]["event"] == "execution_start"
    assert sse_events(server, blocker)[-1]["data"]["data"] == {"node": None, "prompt_id": blocker}


@pytest.mark.slow
def test_finished_job_is_replayed_from_history_after_a_restart(tmp_path):
    srv = start_server(tmp_path / "base")
    try:
        prompt_id = srv.post("/api/prompt?wait=30", json={"prompt": image_prompt(44)}).json()["prompt_id"]
        live = sse_events(srv, prompt_id)
    finally:
        srv.stop()
    srv.start()
    try:
        replayed = sse_events(srv, prompt_id)
        kinds = [e["event"] for e in replayed]
        assert kinds == ["execution_start", "execution_cached", "executed", "execution_success", "executing"]
        executed = replayed[2]["data"]["data"]
        assert executed["output"] == next(e["data"]["data"]["output"] for e in live if e["event"] == "executed")
        # A client that saw more of the live stream than history keeps still learns how it ended.
        late = srv.get(f"/api/jobs/{prompt_id}/events", headers={"Last-Event-ID": "50"})
        frames = [json.loads(line[5:]) for line in late.text.splitlines() if line.startswith("data:")]
        assert [f["type"] for f in frames] == ["execution_success", "executing"]
    finally:
        srv.stop()
        srv.client.close()


def test_unknown_job_and_bad_last_event_id(server):
    assert server.get("/api/jobs/nope/events").status_code == 404
    prompt_id = server.post("/api/prompt?wait=30", json={"prompt": image_prompt(45)}).json()["prompt_id"]
    r = server.get(f"/api/jobs/{prompt_id}/events", headers={"Last-Event-ID": "x"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_parameter"
