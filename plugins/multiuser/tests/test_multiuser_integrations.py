"""Under ``--auth``: run-and-wait, job events, previews, webhooks and the client act for the caller only."""

from __future__ import annotations

import time

import pytest

from comfy_kernel.client import ComfyClient, NotFound
from tests.e2e.webhook_receiver import Receiver

PROMPT = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 41}},
          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from plugins.multiuser.tests.conftest import AuthServer, start_auth_server

    base = tmp_path_factory.mktemp("integrations")
    srv = start_auth_server(base, "--auth-rate-limit", "10000", "--auth-max-failures", "1000",
                            "--webhook-allow-private", "--webhook-retry-delay", "0.3")
    wrapped = AuthServer(srv)
    try:
        yield wrapped
    finally:
        wrapped.close()
        srv.stop()
        srv.client.close()


def test_wait_result_events_and_previews_are_the_owners(server):
    alice, bob = server.new_user("alice"), server.new_user("bob")
    r = alice.post("/api/prompt?wait=60", json={"prompt": PROMPT})
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    prompt_id = r.json()["prompt_id"]
    assert r.json()["outputs"]["2"] == {"text": ["41"]}
    assert alice.get(f"/api/jobs/{prompt_id}/result").status_code == 200
    events = alice.get(f"/api/jobs/{prompt_id}/events")
    assert events.status_code == 200 and "event: execution_success" in events.text
    for path in (f"/api/jobs/{prompt_id}/result", f"/api/jobs/{prompt_id}/events",
                 f"/api/jobs/{prompt_id}/previews/1", f"/api/jobs/{prompt_id}/webhooks"):
        assert bob.get(path).status_code == 404, path
    with server.anonymous() as anonymous:
        assert anonymous.get(f"/api/jobs/{prompt_id}/events").status_code == 401
        assert anonymous.post("/api/prompt?wait=5", json={"prompt": PROMPT}).status_code == 401
        assert anonymous.get("/openapi.json").status_code == 401
    assert alice.get("/openapi.json").status_code == 200


def test_webhooks_belong_to_their_owner(server):
    alice, bob = server.new_user("alice"), server.new_user("bob")
    with Receiver() as rx:
        hook = alice.post("/api/webhooks", json={"url": rx.url, "events": ["completed"]})
        assert hook.status_code == 201, hook.text
        hook_id = hook.json()["id"]
        assert bob.get("/api/webhooks").json()["webhooks"] == []
        assert bob.get(f"/api/webhooks/{hook_id}").status_code == 404
        assert bob.request("PATCH", f"/api/webhooks/{hook_id}", json={"enabled": False}).status_code == 404
        assert bob.delete(f"/api/webhooks/{hook_id}").status_code == 404
        assert alice.get("/api/webhooks/signing-secret").json() != bob.get("/api/webhooks/signing-secret").json()

        bob.post("/api/prompt?wait=60", json={"prompt": PROMPT})
        mine = alice.post("/api/prompt?wait=60", json={"prompt": PROMPT}).json()["prompt_id"]
        got = rx.wait_for(1)
        time.sleep(0.8)
        assert len(rx.received()) == 1 and got[0]["json"]["data"]["prompt_id"] == mine
        log = alice.get(f"/api/jobs/{mine}/webhooks").json()["deliveries"]
        assert [d["state"] for d in log] == ["delivered"]
        assert bob.get(f"/api/jobs/{mine}/webhooks").status_code == 404


def test_the_client_with_api_keys(server):
    alice, bob = server.new_user("alice"), server.new_user("bob")
    with ComfyClient(server.url, api_key=alice.api_key()) as client:
        result = client.run(PROMPT)
        assert result.ok and result.outputs["2"] == {"text": ["41"]}
        events = list(client.stream(result.prompt_id))
        assert events[-1].final
    with ComfyClient(server.url, api_key=bob.api_key()) as other, pytest.raises(NotFound):
        other.wait(result.prompt_id)
