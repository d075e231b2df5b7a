"""Webhooks through a real server to a receiver on loopback (allowed with ``--webhook-allow-private``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from comfy_kernel.testing import run_sql, server_database
from comfy_kernel.webhooks import WebhookVerificationError, verify

from .integration_helpers import failing_prompt, image_prompt, sleep_prompt, start_server
from .webhook_receiver import Receiver

FAST = ("--webhook-allow-private", "--webhook-retry-delay", "0.3")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("webhooks"), *FAST, "--multi-user")
    yield srv
    srv.stop()
    srv.client.close()


def user(name: str) -> dict[str, str]:
    return {"Comfy-User": name}


def independent_check(secret: str, request: dict) -> None:
    """The signature recomputed with nothing but hmac and base64: HMAC-SHA256 over id.timestamp.body."""
    headers = request["headers"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["body"]
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == "v1," + expected
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 60


def test_prompt_webhook_is_signed_and_carries_every_event(server):
    secret = server.get("/api/webhooks/signing-secret", headers=user("alice")).json()["secret"]
    assert secret.startswith("whsec_")
    assert server.get("/api/webhooks/signing-secret", headers=user("alice")).json()["secret"] == secret
    with Receiver() as rx:
        hook = {"url": rx.url + "/hooks/comfy?source=test", "events": ["queued", "started", "output", "completed"]}
        r = server.post("/api/prompt?wait=30", headers=user("alice"),
                        json={"prompt": image_prompt(90), "extra_data": {"webhook": hook}})
        assert r.status_code == 200, r.text
        prompt_id = r.json()["prompt_id"]
        got = rx.wait_for(4)
        time.sleep(0.5)
        assert len(rx.received()) == 4  # one delivery per event
    assert sorted(g["json"]["type"] for g in got) == ["job.completed", "job.output", "job.queued", "job.started"]
    for request in got:
        assert request["path"] == "/hooks/comfy?source=test"
        assert request["headers"]["content-type"] == "application/json"
        independent_check(secret, request)
        assert verify(secret, request["headers"], request["body"]) == request["headers"]["webhook-id"]
        assert request["json"]["data"]["prompt_id"] == prompt_id
    completed = next(g["json"] for g in got if g["json"]["type"] == "job.completed")["data"]
    assert completed["status"] == "completed"
    assert completed["outputs"]["3"]["images"][0]["url"].startswith(server.url + "/api/view?")
    assert completed["outputs"] == r.json()["outputs"]
    output = next(g["json"] for g in got if g["json"]["type"] == "job.output")["data"]
    assert output["node"] == "3" and output["output"] == completed["outputs"]["3"]
    # Tampering, another secret, or an old timestamp are all refused by the verifier.
    request = got[0]
    with pytest.raises(WebhookVerificationError):
        verify(secret, request["headers"], request["body"] + b" ")
    with pytest.raises(WebhookVerificationError):
        verify(server.get("/api/webhooks/signing-secret", headers=user("bob")).json()["secret"],
               request["headers"], request["body"])
    with pytest.raises(WebhookVerificationError):
        verify(secret, request["headers"], request["body"], now=time.time() + 3600)
    # The delivery log of the job, and only for its owner.
    log = server.get(f"/api/jobs/{prompt_id}/webhooks", headers=user("alice")).json()
    assert sorted(d["event"] for d in log["deliveries"]) == ["completed", "output", "queued", "started"]
    assert all(d["state"] == "delivered" and d["attempts"] == 1 and d["log"][0]["status"] == 200
               for d in log["deliveries"])
    assert server.get(f"/api/jobs/{prompt_id}/webhooks", headers=user("bob")).status_code == 404


def test_default_events_and_a_failed_job(server):
    with Receiver() as rx:
        r = server.post("/api/prompt?wait=30", headers=user("carol"),
                        json={"prompt": failing_prompt(), "extra_data": {"webhook": rx.url}})
        assert r.json()["status"] == "failed"
        got = rx.wait_for(1)
        time.sleep(0.5)
        assert len(rx.received()) == 1
    data = got[0]["json"]["data"]
    assert got[0]["json"]["type"] == "job.completed"
    assert data["status"] == "failed" and data["execution_error"]["node_id"] == "2"


def test_failed_deliveries_are_retried_with_back_off(server):
    with Receiver(status_for=lambda n: 503 if n < 2 else 200) as rx:
        r = server.post("/api/prompt", headers=user("dave"),
                        json={"prompt": image_prompt(91), "extra_data": {"webhook": rx.url}})
        prompt_id = r.json()["prompt_id"]
        got = rx.wait_for(3)
        time.sleep(0.5)
        assert len(rx.received()) == 3
    assert len({g["headers"]["webhook-id"] for g in got}) == 1  # the same delivery each time
    assert len({g["body"] for g in got}) == 1
    gaps = [b["at"] - a["at"] for a, b in zip(got, got[1:], strict=False)]
    assert gaps[0] >= 0.3 * 0.9 - 0.05 and gaps[1] >= 1.2 * 0.9 - 0.05  # 0.3 s, then four times that
    log = server.get(f"/api/jobs/{prompt_id}/webhooks", headers=user("dave")).json()["deliveries"]
    assert len(log) == 1 and log[0]["state"] == "delivered" and log[0]["attempts"] == 3
    assert [a["status"] for a in log[0]["log"]] == [503, 503, 200]


@pytest.mark.slow
def test_gone_stops_retrying_and_attempts_are_capped(tmp_path):
    srv = start_server(tmp_path / "base", *FAST, "--webhook-max-attempts", "2")
    try:
        with Receiver(status_for=lambda n: 410) as gone, Receiver(status_for=lambda n: 500) as broken:
            a = srv.post("/api/prompt?wait=30", json={"prompt": image_prompt(1), "extra_data": {"webhook": gone.url}})
            b = srv.post("/api/prompt?wait=30", json={"prompt": image_prompt(2),
                                                      "extra_data": {"webhook": broken.url}})
            gone.wait_for(1)
            broken.wait_for(2)
            time.sleep(2.0)
            assert len(gone.received()) == 1 and len(broken.received()) == 2
        for r in (a, b):
            log = srv.get(f"/api/jobs/{r.json()['prompt_id']}/webhooks").json()["deliveries"]
            assert log[0]["state"] == "failed" and log[0]["next_attempt_at"] is None
    finally:
        srv.stop()
        srv.client.close()


@pytest.mark.slow
def test_delivered_webhooks_are_not_sent_again_after_restarts(tmp_path):
    base = tmp_path / "base"
    srv = start_server(base, *FAST)
    with Receiver() as rx:
        try:
            hook = {"url": rx.url, "events": ["started", "completed"]}
            srv.post("/api/prompt?wait=30", json={"prompt": image_prompt(3), "extra_data": {"webhook": hook}})
            rx.wait_for(2)
            srv.stop()  # a clean stop
            srv.start()
            time.sleep(1.5)
            srv.kill()  # and a crash
            srv.start()
            time.sleep(1.5)
            assert len(rx.received()) == 2
        finally:
            srv.stop()
            srv.client.close()


@pytest.mark.slow
def test_pending_deliveries_survive_a_crash_and_are_sent_once(tmp_path):
    base = tmp_path / "base"
    srv = start_server(base, "--webhook-allow-private", "--webhook-retry-delay", "2")
    with Receiver(status_for=lambda n: 500 if n == 0 else 200) as rx:
        try:
            r = srv.post("/api/prompt?wait=30", json={"prompt": image_prompt(4), "extra_data": {"webhook": rx.url}})
            prompt_id = r.json()["prompt_id"]
            rx.wait_for(1)
            deadline = time.monotonic() + 10  # the failed attempt is on record (a busy machine writes late)
            while time.monotonic() < deadline:
                log = srv.get(f"/api/jobs/{prompt_id}/webhooks").json()["deliveries"]
                if log and [a["status"] for a in log[0]["log"]] == [500]:
                    break
                time.sleep(0.05)
            srv.kill()  # the retry is due in about 2 s; the server is gone by then
            srv.start()
            got = rx.wait_for(2, timeout=20)
            time.sleep(1.5)
            assert len(rx.received()) == 2
            assert [g["status"] for g in got] == [500, 200]
            assert got[0]["headers"]["webhook-id"] == got[1]["headers"]["webhook-id"]
            assert got[1]["json"]["data"]["prompt_id"] == prompt_id
            log = srv.get(f"/api/jobs/{prompt_id}/webhooks").json()["deliveries"]
            assert log[0]["state"] == "delivered" and [a["status"] for a in log[0]["log"]] == [500, 200]
        finally:
            srv.stop()
            srv.client.close()


@pytest.mark.slow
def test_a_final_event_lost_in_a_crash_is_recovered_at_start(tmp_path):
    """The server died after the job's history was written but before its webhook was queued."""
    base = tmp_path / "base"
    srv = start_server(base, *FAST)
    with Receiver(status_for=lambda n: 500 if n == 0 else 200) as rx:
        try:
            r = srv.post("/api/prompt?wait=30", json={"prompt": image_prompt(5), "extra_data": {"webhook": rx.url}})
            prompt_id = r.json()["prompt_id"]
            rx.wait_for(1)
            srv.kill()
            database = server_database(base)  # undo what the crash would have lost
            run_sql(database, "DELETE FROM ck_webhook_deliveries WHERE prompt_id=:pid", {"pid": prompt_id})
            run_sql(database, "UPDATE ck_webhook_jobs SET final_queued=0 WHERE prompt_id=:pid", {"pid": prompt_id})
            srv.start()
            got = rx.wait_for(2)
            time.sleep(1.0)
            assert len(rx.received()) == 2
            assert got[1]["json"]["data"]["status"] == "completed"
            assert got[0]["headers"]["webhook-id"] == got[1]["headers"]["webhook-id"]
        finally:
            srv.stop()
            srv.client.close()


@pytest.mark.slow
def test_queued_job_with_a_webhook_survives_a_restart(tmp_path):
    base = tmp_path / "base"
    srv = start_server(base, *FAST)
    with Receiver() as rx:
        try:
            srv.post("/api/prompt", json={"prompt": sleep_prompt(3.0)})
            r = srv.post("/api/prompt", json={"prompt": image_prompt(6), "extra_data": {"webhook": rx.url}})
            time.sleep(0.5)
            srv.kill()
            srv.start()
            got = rx.wait_for(1, timeout=40)
            time.sleep(1.0)
            assert len(rx.received()) == 1
            assert got[0]["json"]["data"]["prompt_id"] == r.json()["prompt_id"]
            assert got[0]["json"]["data"]["status"] == "completed"
        finally:
            srv.stop()
            srv.client.close()


def test_registered_webhooks(server):
    with Receiver() as rx:
        r = server.post("/api/webhooks", headers=user("erin"),
                        json={"url": rx.url + "/erin", "events": ["started", "completed"], "description": "ci"})
        assert r.status_code == 201, r.text
        hook = r.json()
        secret = hook["secret"]
        assert hook["id"].startswith("wh_") and hook["events"] == ["started", "completed"] and hook["enabled"]
        listed = server.get("/api/webhooks", headers=user("erin")).json()["webhooks"]
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
        assert server.get("/api/webhooks", headers=user("frank")).json()["webhooks"] == []
        assert server.get(f"/api/webhooks/{hook['id']}", headers=user("frank")).status_code == 404
        assert server.request("DELETE", f"/api/webhooks/{hook['id']}", headers=user("frank")).status_code == 404

        # Every job erin queues now notifies it; frank's do not.
        server.post("/api/prompt?wait=30", headers=user("frank"), json={"prompt": image_prompt(7)})
        mine = server.post("/api/prompt?wait=30", headers=user("erin"), json={"prompt": image_prompt(8)}).json()
        got = rx.wait_for(2)
        time.sleep(0.5)
        assert len(rx.received()) == 2
        for g in got:
            independent_check(secret, g)
            assert g["json"]["data"]["prompt_id"] == mine["prompt_id"] and g["path"] == "/erin"

        # Disabled: nothing. Patched events: only those.
        p = server.request("PATCH", f"/api/webhooks/{hook['id']}", headers=user("erin"), json={"enabled": False})
        assert p.status_code == 200 and p.json()["enabled"] is False
        server.post("/api/prompt?wait=30", headers=user("erin"), json={"prompt": image_prompt(9)})
        time.sleep(0.8)
        assert len(rx.received()) == 2
        server.request("PATCH", f"/api/webhooks/{hook['id']}", headers=user("erin"), json={"enabled": True,
                                                                                 "events": ["completed"]})
        rotated = server.post(f"/api/webhooks/{hook['id']}/rotate-secret", headers=user("erin")).json()["secret"]
        assert rotated != secret
        server.post("/api/prompt?wait=30", headers=user("erin"), json={"prompt": image_prompt(10)})
        got = rx.wait_for(3)
        assert got[2]["json"]["type"] == "job.completed"
        independent_check(rotated, got[2])

        assert server.request("DELETE", f"/api/webhooks/{hook['id']}", headers=user("erin")).status_code == 204
        assert server.get(f"/api/webhooks/{hook['id']}", headers=user("erin")).status_code == 404
        server.post("/api/prompt?wait=30", headers=user("erin"), json={"prompt": image_prompt(11)})
        time.sleep(0.8)
        assert len(rx.received()) == 3


@pytest.mark.parametrize("body", [
    {"url": "ftp://example.com/x"}, {"url": "http://user:pw@example.com/"}, {"url": ""}, {"url": 5},
    {"url": "https://example.com/", "events": ["nope"]}, {"url": "https://example.com/", "events": []},
    {"url": "https://example.com/", "extra": 1}, {"url": "https://example.com/", "description": 3},
    {"url": "https://example.com/", "enabled": "yes"},
])
def test_bad_registrations_are_400(server, body):
    r = server.post("/api/webhooks", headers=user("gina"), json=body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_webhook", r.text
    assert server.post("/api/webhooks", headers=user("gina"), content=b"[").status_code == 400


@pytest.mark.parametrize("hook", [5, [], {"url": "https://example.com"}, {"url": "nope"}])
def test_bad_prompt_webhooks_are_400_and_queue_nothing(server, hook):
    before = server.get("/api/jobs", headers=user("hana")).json()["pagination"]["total"]
    if hook == {"url": "https://example.com"}:
        hook = {"url": "https://example.com", "events": "done"}
    r = server.post("/api/prompt", headers=user("hana"),
                    json={"prompt": image_prompt(1), "extra_data": {"webhook": hook}})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_webhook", r.text
    assert server.get("/api/jobs", headers=user("hana")).json()["pagination"]["total"] == before


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/x", "http://10.1.2.3/",
                                 "http://192.168.0.1/", "http://169.254.169.254/latest", "http://0.0.0.0/",
                                 "http://[::ffff:127.0.0.1]/", "http://app.localhost/"])
def test_private_targets_are_refused_by_default(url, private_server):
    r = private_server.post("/api/prompt", json={"prompt": image_prompt(1), "extra_data": {"webhook": url}})
    assert r.status_code == 400 and "not allowed" in r.json()["error"]["message"]
    assert private_server.post("/api/webhooks", json={"url": url}).status_code == 400


def test_names_resolving_to_private_addresses_are_refused_when_delivering(private_server):
    """A public-looking name is accepted, but it resolves to loopback: the delivery is refused, not sent."""
    import socket

    with Receiver() as rx:
        name = socket.gethostname()  # a name that resolves without a network: this host's own
        addresses = {info[4][0] for info in socket.getaddrinfo(name, rx.port)}
        if not addresses or any(not a.startswith(("127.", "::1")) for a in addresses):
            pytest.skip(f"{name} does not resolve to loopback only here")
        r = private_server.post("/api/prompt?wait=30", json={"prompt": image_prompt(1),
                                                             "extra_data": {"webhook": f"http://{name}:{rx.port}/"}})
        assert r.status_code == 200, r.text
        prompt_id = r.json()["prompt_id"]
        deadline = time.time() + 10
        while time.time() < deadline:
            log = private_server.get(f"/api/jobs/{prompt_id}/webhooks").json()["deliveries"]
            if log and log[0]["state"] != "pending":
                break
            time.sleep(0.1)
        assert log[0]["state"] == "failed" and "private" in log[0]["last_error"]
        assert rx.received() == []


@pytest.fixture(scope="module")
def private_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("private"))
    yield srv
    srv.stop()
    srv.client.close()
