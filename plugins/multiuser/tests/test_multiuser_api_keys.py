"""API keys: shown once, stored hashed, prefix, last use, expiry, revocation."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from plugins.multiuser.tests.conftest import AuthServer, database_text


def _with_key(auth: AuthServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=auth.url, headers={"X-API-Key": key})


def test_key_is_shown_once_and_stored_hashed(auth: AuthServer):
    user = auth.new_user()
    r = user.post("/api/workspace/api-keys", json={"name": "ci", "description": "build bot"})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("comfyui-") and len(key) > 40
    assert created["key_prefix"] == key[len("comfyui-"):len("comfyui-") + 8]
    assert r.headers["cache-control"] == "no-store"
    listed = user.get("/api/workspace/api-keys").json()["api_keys"]
    entry = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in entry and entry["key_prefix"] == created["key_prefix"]
    assert entry["workspace_id"] == user.workspace_id and entry["user_id"] == user.id
    assert key not in user.get("/api/workspace/api-keys").text
    dump = database_text(auth.server.base_dir)
    assert "mu_api_keys" in dump and key not in dump and key[len("comfyui-"):] not in dump


def test_key_authenticates_and_records_last_use(auth: AuthServer):
    user = auth.new_user()
    key = user.api_key()
    client = _with_key(auth, key)
    me = client.get("/api/user")
    assert me.status_code == 200 and me.json()["id"] == user.id and me.json()["auth_method"] == "api_key"
    time.sleep(0.3)
    entry = user.get("/api/workspace/api-keys").json()["api_keys"][0]
    assert entry.get("last_used_at")
    client.close()


def test_bad_keys_are_refused_with_a_challenge(auth: AuthServer):
    client = _with_key(auth, "comfyui-not-a-real-key")
    r = client.get("/api/object_info")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert "resource_metadata=" in r.headers["www-authenticate"]
    time.sleep(0.3)
    events = auth.admin.get("/api/admin/audit", params={"event": "auth.refused"}).json()["events"]
    assert any(e["detail"]["method"] == "api_key" and e["outcome"] == "failure" for e in events)
    assert all("not-a-real-key" not in str(e) for e in events)
    client.close()


def test_revoked_key_stops_working(auth: AuthServer):
    user = auth.new_user()
    created = user.post("/api/workspace/api-keys", json={"name": "temp"}).json()
    client = _with_key(auth, created["key"])
    assert client.get("/api/user").status_code == 200
    assert user.delete(f"/api/workspace/api-keys/{created['id']}").status_code == 204
    assert client.get("/api/user").status_code == 401
    entry = next(k for k in user.get("/api/workspace/api-keys").json()["api_keys"] if k["id"] == created["id"])
    assert entry["revoked_at"]
    events = auth.admin.get("/api/admin/audit", params={"event": "api_key.revoke"}).json()["events"]
    assert any(e["detail"]["key_id"] == created["id"] for e in events)
    client.close()


def test_expired_key_stops_working(auth: AuthServer):
    user = auth.new_user()
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    created = user.post("/api/workspace/api-keys", json={"name": "short", "expires_at": soon})
    assert created.status_code == 201 and created.json()["expires_at"]
    client = _with_key(auth, created.json()["key"])
    assert client.get("/api/user").status_code == 200
    time.sleep(2.5)
    assert client.get("/api/user").status_code == 401
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    assert user.post("/api/workspace/api-keys", json={"name": "old", "expires_at": past}).status_code == 422
    client.close()


def test_validation(auth: AuthServer):
    user = auth.new_user()
    assert user.post("/api/workspace/api-keys", json={}).status_code == 422
    assert user.post("/api/workspace/api-keys", json={"name": "x", "description": "é" * 3000}).status_code == 422
    assert user.post("/api/workspace/api-keys", content=b"not json").status_code == 400


def test_a_key_cannot_mint_keys(auth: AuthServer):
    user = auth.new_user()
    client = _with_key(auth, user.api_key())
    assert client.post("/api/workspace/api-keys", json={"name": "child"}).status_code == 403
    client.close()


def test_keys_of_others_are_invisible_and_irrevocable(auth: AuthServer):
    alice, bob = auth.new_user(), auth.new_user()
    created = alice.post("/api/workspace/api-keys", json={"name": "alice"}).json()
    assert created["id"] not in bob.get("/api/workspace/api-keys").text
    assert bob.delete(f"/api/workspace/api-keys/{created['id']}").status_code == 404
    client = _with_key(auth, created["key"])
    assert client.get("/api/user").json()["id"] == alice.id
    client.close()


def test_key_can_open_a_session(auth: AuthServer):
    user = auth.new_user()
    client = _with_key(auth, user.api_key())
    r = client.post("/api/auth/session")
    assert r.status_code == 200 and "session=" in r.headers["set-cookie"]
    cookie_only = httpx.Client(base_url=auth.url, cookies={"session": r.cookies["session"]})
    assert cookie_only.get("/api/user").json()["id"] == user.id
    # ... but a cookie cannot open another session.
    assert cookie_only.post("/api/auth/session", headers={"Origin": auth.url}).status_code == 401
    cookie_only.close()
    client.close()
