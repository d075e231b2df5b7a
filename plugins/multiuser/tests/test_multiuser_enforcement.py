"""Enforcement over the whole route table of a server with every installed plugin.

* Without credentials, every route outside the allow-list answers 401.
* With another user's credentials, no route (whatever id or file name of the
  victim it is given) returns the victim's data or changes it; admin areas
  answer 403 to non-administrators.
* The WebSocket requires credentials and a client id belongs to one owner.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from plugins.multiuser.tests.conftest import AuthServer

PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:[A-Za-z]+)?\}")
BODY_METHODS = {"POST", "PUT", "PATCH"}


def fill(path: str, value: str) -> str:
    return PARAM.sub(value, path)


def routes(auth: AuthServer) -> list[dict]:
    r = auth.admin.get("/api/admin/routes")
    assert r.status_code == 200, r.text
    return r.json()["routes"]


def test_route_listing_is_admin_only(auth: AuthServer):
    user = auth.new_user()
    assert user.get("/api/admin/routes").status_code == 403
    assert auth.anonymous().get("/api/admin/routes").status_code == 401


def test_every_route_refuses_requests_without_credentials(auth: AuthServer):
    anonymous = auth.anonymous()
    checked, public = 0, set()
    for route in routes(auth):
        for method in route["methods"]:
            if method == "WS":
                continue
            for path in route["paths"]:
                url = fill(path, "x")
                if route["public"][method]:
                    public.add((method, path))
                    continue
                kwargs = {"json": {}} if method in BODY_METHODS else {}
                r = anonymous.request(method, url, **kwargs)
                assert r.status_code == 401, (method, url, r.status_code, r.text[:200])
                assert r.headers["www-authenticate"].startswith("Bearer ")
                checked += 1
    assert checked > 40
    # The allow-list is exactly what it says: nothing with user data in it.
    allowed = {p.removeprefix("/api") for _, p in public}
    assert allowed <= {"/", "/health", "/system_stats", "/features", "/.well-known/jwks.json",
                       "/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource",
                       "/oauth/register", "/oauth/token", "/oauth/authorize", "/auth/session", "/auth/token",
                       "/auth/setup", "/auth/setup.js", "/auth/login", "/auth/login.js", "/auth/consent",
                       "/auth/consent.js"}, allowed
    anonymous.close()


def test_static_frontend_files_stay_public(auth: AuthServer):
    anonymous = auth.anonymous()
    root = anonymous.get("/", follow_redirects=False)
    assert root.status_code == 303 and root.headers["location"] == "/auth/login"
    login = anonymous.get("/auth/login")
    assert login.status_code == 200 and "<form" in login.text
    # Without its script the form can neither submit nor put credentials in a URL.
    assert '<form id="form" method="post">' in login.text and "submit\" disabled>" in login.text
    assert anonymous.get("/no-such-static-file.js").status_code == 404  # not a 401: it is not an API route
    anonymous.close()


def _seed_victim(auth: AuthServer, alice, marker: str, content: str) -> dict:
    """Give alice one of everything the installed plugins store per user; returns ids and names."""
    paths = {p for r in routes(auth) for p in r["paths"]}
    made: dict = {"candidates": [alice.id, alice.workspace_id, marker]}
    if "/api/userdata" in paths:
        name = f"workflows%2F{marker}.json"
        r = alice.post(f"/api/userdata/{name}", content=f'{{"marker": "{content}"}}')
        assert r.status_code == 200, r.text
        made["userdata"] = name
        made["candidates"] += [name, f"{marker}.json"]
    if "/api/settings/{rest:path}" in paths or "/api/settings" in paths:
        r = alice.post("/api/settings/Comfy.Marker", json=content)
        assert r.status_code == 200, r.text
        made["setting"] = True
    if "/api/secrets" in paths:
        r = alice.post("/api/secrets", json={"name": marker, "secret_value": content})
        assert r.status_code == 201, r.text
        made["secret"] = r.json()["id"]
        made["candidates"].append(made["secret"])
    r = alice.post("/api/workspace/api-keys", json={"name": marker})
    assert r.status_code == 201
    made["key"] = r.json()["key"]
    made["candidates"].append(r.json()["id"])
    if "/api/workspaces" in paths:
        r = alice.post("/api/workspaces", json={"name": marker})
        assert r.status_code == 201, r.text
        made["team"] = r.json()["id"]
        made["candidates"].append(made["team"])
    made["names"] = [marker]
    nodes = alice.get("/api/object_info").json() if "/api/object_info" in paths else {}
    if "/api/prompt" in paths and {"PrimitiveInt", "PreviewAny"} <= set(nodes):
        prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
                  "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
        r = alice.post("/api/prompt", json={"prompt": prompt})
        assert r.status_code == 200, r.text
        made["prompt"] = r.json()["prompt_id"]
        made["candidates"].append(made["prompt"])
        made["names"].append(made["prompt"])
    if "/api/assets" in paths:
        r = alice.post("/api/assets", files={"file": (f"{marker}.bin", content.encode(), "application/octet-stream")})
        if r.status_code in (200, 201):
            made["asset"] = r.json()["id"]
            made["candidates"].append(made["asset"])
    return made


def _check_victim_intact(auth: AuthServer, alice, marker: str, content: str, made: dict) -> None:
    if "userdata" in made:
        r = alice.get(f"/api/userdata/{made['userdata']}")
        assert r.status_code == 200 and content in r.text
    if made.get("setting"):
        assert alice.get("/api/settings/Comfy.Marker").json() == content
    if "secret" in made:
        assert alice.get(f"/api/secrets/{made['secret']}").status_code == 200
    key_client = httpx.Client(base_url=auth.url, headers={"X-API-Key": made["key"]})
    assert key_client.get("/api/user").json()["id"] == alice.id
    key_client.close()
    if "team" in made:
        assert alice.get(f"/api/workspaces/{made['team']}").json()["name"] == marker
    if "asset" in made:
        assert alice.get(f"/api/assets/{made['asset']}").status_code == 200
    if "prompt" in made:
        deadline = time.monotonic() + 60
        while made["prompt"] not in alice.get(f"/api/history/{made['prompt']}").json():
            assert time.monotonic() < deadline, "alice's prompt vanished"
            time.sleep(0.2)


def test_no_route_gives_another_user_access(auth: AuthServer):
    alice, bob = auth.new_user("alice"), auth.new_user("bob")
    marker, content = "m" + secrets.token_hex(8), "c" + secrets.token_hex(8)
    made = _seed_victim(auth, alice, marker, content)
    bob_client = httpx.Client(base_url=auth.url, headers={"X-API-Key": bob.api_key()}, timeout=60.0)
    requests = 0
    for route in routes(auth):
        for method in route["methods"]:
            if method == "WS":
                continue
            for path in route["paths"]:
                values = made["candidates"] if PARAM.search(path) else [None]
                for value in values:
                    url = fill(path, value) if value is not None else path
                    kwargs = {"json": {}} if method in BODY_METHODS else {}
                    r = bob_client.request(method, url, **kwargs)
                    requests += 1
                    # Names may be echoed back from the URL itself; contents never.
                    assert content not in r.text, (method, url, r.status_code, r.text[:300])
                    for name in made["names"]:
                        if name not in url:
                            assert name not in r.text, (method, url, r.status_code, r.text[:300])
                    if route["admin_only"]:
                        assert r.status_code == 403, (method, url, r.status_code)
    assert requests > 100
    _check_victim_intact(auth, alice, marker, content, made)
    bob_client.close()


def test_websocket_requires_credentials(auth: AuthServer):
    ws_url = auth.url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus):
        with connect(ws_url + "?clientId=anon"):
            pass
    user = auth.new_user()
    with connect(ws_url + "?clientId=" + uuid.uuid4().hex, additional_headers={"X-API-Key": user.api_key()}) as ws:
        assert '"status"' in ws.recv(timeout=10)
    cookie = f"session={user.client.cookies.get('session')}"
    with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": auth.url}) as ws:
        assert '"status"' in ws.recv(timeout=10)
    with pytest.raises(InvalidStatus):
        with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": "http://evil.example"}):
            pass


def test_a_client_id_belongs_to_one_owner(auth: AuthServer):
    ws_url = auth.url.replace("http://", "ws://") + "/ws?clientId="
    alice, bob = auth.new_user(), auth.new_user()
    client_id = uuid.uuid4().hex
    with connect(ws_url + client_id, additional_headers={"X-API-Key": alice.api_key()}) as ws:
        ws.recv(timeout=10)
    with pytest.raises(InvalidStatus):
        with connect(ws_url + client_id, additional_headers={"X-API-Key": bob.api_key()}):
            pass
    with connect(ws_url + client_id, additional_headers={"X-API-Key": alice.api_key()}) as ws:
        ws.recv(timeout=10)


def test_admin_areas_refuse_other_users(auth: AuthServer):
    user = auth.new_user()
    assert user.get("/internal/logs").status_code == 403
    assert user.post("/api/admin/signing-keys/rotate").status_code == 403
    assert auth.admin.get("/internal/logs").status_code == 200
