"""Quotas, subscriptions and the billing command against a real ``--multi-user --billing`` server
with two CPU workers (users are named by the ``Comfy-User`` header; no sign-in)."""

from __future__ import annotations

import time

import billing_helpers as h
import httpx
import pytest

from comfy_kernel.testing import ServerProcess

pytestmark = pytest.mark.slow


class Caller:
    def __init__(self, server: ServerProcess, name: str):
        self.server, self.name = server, name
        self.headers = {"Comfy-User": name}

    def get(self, path: str, **kw) -> httpx.Response:
        return self.server.get(path, headers=self.headers, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.server.post(path, headers=self.headers, **kw)

    def queue(self, prompt: dict) -> httpx.Response:
        return self.post("/api/prompt", json={"prompt": prompt})

    def wait(self, prompt_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.get(f"/api/history/{prompt_id}").json()
            if body:
                return body[prompt_id]
            time.sleep(0.05)
        raise TimeoutError(prompt_id)

    def runs(self, ids: list[str], timeout: float = 10) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.get("/api/billing/usage", params={"view": "prompts"}).json()["prompts"]
            found = {r["prompt_id"]: r for r in rows if r["prompt_id"] in ids}
            if len(found) == len(ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def balance(self) -> int:
        return self.get("/api/billing/balance").json()["amount_micros"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = h.prepare_base(tmp_path_factory.mktemp("billing-mu") / "base")
    args = [*h.disable_all_but("billing"), "--multi-user", "--cpu", "--workers", "2", "--billing",
            "--billing-config", h.PLANS]
    with ServerProcess(base, *args) as srv:
        yield srv


def credit(server: ServerProcess, account: str, amount: str) -> None:
    done = h.cli(server.base_dir, "billing", "credit", account, amount, "--billing-config", h.PLANS, "--key", account)
    assert done.returncode == 0, done.stderr


def test_size_batch_and_queue_limits(server):
    lim = Caller(server, "lim")
    assert lim.balance() == 1000
    credit(server, "lim", "1.0")
    deadline = time.monotonic() + 5
    while lim.balance() == 1000 and time.monotonic() < deadline:  # the server notices the CLI's write
        time.sleep(0.1)
    assert lim.balance() == 1_001_000
    big = lim.queue(h.workflow(1, 0, width=512, height=512))
    assert big.status_code == 403
    body = big.json()
    assert body["error"]["type"] == "plan_limit" and list(body["node_errors"]) == ["3"]
    assert body["node_errors"]["3"]["errors"][0]["extra_info"] == {"input_name": "width", "received_value": 512}
    batch = lim.queue(h.workflow(1, 0, batch=3))
    assert batch.status_code == 403 and batch.json()["node_errors"]["3"]["errors"][0]["extra_info"]["input_name"] \
        == "batch_size"
    ids = [lim.queue(h.workflow(10 + i, 0.8)).json()["prompt_id"] for i in range(3)]
    over = lim.queue(h.workflow(20, 0.1))
    assert over.status_code == 429 and over.json()["error"]["type"] == "queue_limit"
    # A second user on the same plan runs beside lim on the other worker.
    other = Caller(server, "other")
    other_id = other.queue(h.workflow(30, 0.8)).json()["prompt_id"]
    for pid in ids:
        lim.wait(pid)
    other.wait(other_id)
    runs = lim.runs(ids)
    spans = sorted((r["started"], r["ended"]) for r in runs.values())
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False)]
    assert all(gap >= -0.01 for gap in gaps), f"lim's prompts overlapped: {spans}"
    theirs = other.runs([other_id])[other_id]
    assert any(s < theirs["ended"] and theirs["started"] < e for s, e in spans), "the other user waited for lim"
    assert lim.queue(h.workflow(21, 0.0)).status_code == 200  # the queue drained


def test_subscription_lifecycle_with_manual_approval(server):
    sub = Caller(server, "sub")
    preview = sub.post("/api/billing/preview-subscribe", json={"plan_slug": "pro"}).json()
    assert preview["transition_type"] == "new_subscription" and preview["cost_today_cents"] == 2000
    assert preview["allowed"] and preview["current_plan"]["slug"] == "basic"
    assert sub.post("/api/billing/subscribe", json={"plan_slug": "gold"}).status_code == 400
    answer = sub.post("/api/billing/subscribe", json={"plan_slug": "pro", "idempotency_key": "s1"}).json()
    assert answer["status"] == "pending_payment"
    status = sub.get("/api/billing/status").json()
    assert status["billing_status"] == "pending_payment" and status["plan_slug"] == "basic"
    listed = h.cli(server.base_dir, "billing", "ops", "--pending", "--billing-config", h.PLANS)
    assert answer["billing_op_id"] in listed.stdout
    done = h.cli(server.base_dir, "billing", "approve", answer["billing_op_id"], "--billing-config", h.PLANS)
    assert done.returncode == 0 and "succeeded" in done.stdout, done.stderr
    deadline = time.monotonic() + 5
    while sub.get("/api/billing/status").json().get("plan_slug") != "pro" and time.monotonic() < deadline:
        time.sleep(0.1)
    status = sub.get("/api/billing/status").json()
    assert status == {**status, "plan_slug": "pro", "subscription_tier": "PRO", "is_active": True,
                      "billing_status": "paid", "subscription_status": "active"}
    assert sub.get(f"/api/billing/ops/{answer['billing_op_id']}").json()["status"] == "succeeded"
    assert sub.get("/api/billing/balance").json()["cloud_credit_balance_micros"] == 1000 + 1_000_000
    plans = {p["slug"]: p for p in sub.get("/api/billing/plans").json()["plans"]}
    assert plans["pro"]["availability"] == {"available": False, "reason": "same_plan"}

    cancel = sub.post("/api/billing/subscription/cancel", json={}).json()
    status = sub.get("/api/billing/status").json()
    assert status["subscription_status"] == "canceled" and status["cancel_at"] == cancel["cancel_at"]
    resumed = sub.post("/api/billing/subscription/resubscribe", json={})
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    again = sub.post("/api/billing/subscription/resubscribe", json={})
    assert again.status_code == 400 and again.json()["code"] == "not_in_grace_period"
    assert sub.post("/api/billing/subscription/cancel", json="x").status_code == 400

    events = [e["event_type"] for e in sub.get("/api/billing/events", params={"limit": 100}).json()["events"]]
    for kind in ("subscription.created", "subscription.canceled", "subscription.resumed", "credits.monthly_grant"):
        assert kind in events
    page = sub.get("/api/billing/events", params={"limit": 2, "page": 2}).json()
    assert page["page"] == 2 and page["limit"] == 2 and len(page["events"]) == 2
    assert page["totalPages"] == (page["total"] + 1) // 2

    low = sub.post("/api/billing/topup", json={"amount_cents": 499})
    assert low.status_code == 400 and low.json()["code"] == "invalid_amount"
    portal = sub.post("/api/billing/payment-portal", json={"return_url": "https://app.example/back?x=1"}).json()
    assert portal["url"] == "https://pay.example.test/portal?return=https%3A%2F%2Fapp.example%2Fback%3Fx%3D1"
    rejected = sub.post("/api/billing/topup", json={"amount_cents": 1000}).json()
    done = h.cli(server.base_dir, "billing", "reject", rejected["billing_op_id"], "--reason", "no invoice",
                 "--billing-config", h.PLANS)
    assert done.returncode == 0, done.stderr
    op = sub.get(f"/api/billing/ops/{rejected['billing_op_id']}").json()
    assert op["status"] == "failed" and op["error_message"] == "no invoice"


def test_unknown_operations_and_methods(server):
    anyone = Caller(server, "lim")
    assert anyone.get("/api/billing/nothing-here").json() == {"code": "not_found", "message": "Not found"}
    wrong = server.request("DELETE", "/api/billing/balance", headers=anyone.headers)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert server.request("HEAD", "/api/billing/balance", headers=anyone.headers).status_code == 200
    assert anyone.post("/api/billing/topup", content=b"{not json").json()["code"] == "invalid_request"


def test_bodies_follow_the_kernels_json_rules(server):
    """One depth limit and one error for every JSON route; pages of other origins cannot post."""
    anyone = Caller(server, "lim")
    deep = b"{\"amount_cents\": 100, \"x\": " + b"[" * 200 + b"]" * 200 + b"}"
    r = server.post("/api/billing/topup", content=deep, headers={**anyone.headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "json_too_deep", r.text
    hostile = {**anyone.headers, "Origin": "null", "Content-Type": "text/plain"}
    assert server.post("/api/billing/topup", content=b'{"amount_cents": 100}', headers=hostile).status_code == 403


def test_no_admin_without_auth_and_the_cli_reports_usage(server):
    anyone = Caller(server, "reporter")
    assert anyone.get("/api/admin/billing/usage").status_code == 403
    assert anyone.post("/api/admin/billing/accounts/reporter/credits", json={"amount": 5}).status_code == 403
    pid = anyone.queue(h.workflow(77, 0.3)).json()["prompt_id"]  # this test's own usage (xdist may split the module)
    assert anyone.wait(pid)["status"]["status_str"] == "success" and anyone.runs([pid])
    done = h.cli(server.base_dir, "billing", "usage", "--group-by", "user", "--bucket", "all", "--csv",
                 "--billing-config", h.PLANS)
    assert done.returncode == 0, done.stderr
    rows = {line.split(",")[1]: line.split(",") for line in done.stdout.splitlines()[1:]}
    assert int(rows["reporter"][2]) == 1 and float(rows["reporter"][4]) >= 0.3, done.stdout
    assert h.cli(server.base_dir, "billing", "verify", "--billing-config", h.PLANS).returncode == 0


def test_without_billing_nothing_changes(tmp_path):
    base = h.prepare_base(tmp_path / "base")
    with ServerProcess(base, *h.disable_all_but("billing"), "--cpu") as srv:
        assert srv.get("/api/billing/balance").status_code == 404
        r = srv.post("/api/prompt", json={"prompt": h.workflow(1, 0.0)})
        assert r.status_code == 200, r.text
        pid = r.json()["prompt_id"]
        deadline = time.monotonic() + 30
        while not srv.get(f"/api/history/{pid}").json() and time.monotonic() < deadline:
            time.sleep(0.05)
        entry = srv.get(f"/api/history/{pid}").json()[pid]
        assert "billing" not in entry["prompt"][3]  # not admitted, not stamped
        assert srv.get(f"/api/job/{pid}/status").json()["status"] == "completed"  # the cloud operations stay
