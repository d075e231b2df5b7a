"""``--multi-user``: per-user storage chosen by identity, and the unknown-user answers."""

from __future__ import annotations

import os
from urllib.parse import quote

USER_ROUTES = [
    ("GET", "/api/userdata?dir=workflows"),
    ("GET", "/api/v2/userdata"),
    ("GET", "/api/userdata/a.json"),
    ("POST", "/api/userdata/a.json"),
    ("DELETE", "/api/userdata/a.json"),
    ("POST", "/api/userdata/a.json/move/b.json"),
]
SETTINGS_ROUTES = [
    ("GET", "/api/settings"),
    ("POST", "/api/settings"),
    ("GET", "/api/settings/x"),
    ("POST", "/api/settings/x"),
]


HOSTILE_HEADERS = [None, "", "default", "nobody", "__system", "../alice_1", "alice_1/..", "ALICE_1"]


def test_unknown_users_are_refused(multi):
    for header in HOSTILE_HEADERS:
        refused_everywhere(multi, {} if header is None else {"Comfy-User": header})
    assert not os.path.exists(os.path.join(multi.base_dir, "user", "default"))
    assert not os.path.exists(os.path.join(multi.base_dir, "user", "__system"))


def refused_everywhere(multi, headers):
    for method, path in USER_ROUTES:
        r = multi.request(method, path, headers=headers, content=b"{}" if method == "POST" else None)
        assert r.status_code == 403, (method, path, r.status_code)
    for method, path in SETTINGS_ROUTES:
        r = multi.request(method, path, headers=headers, content=b"{}" if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.status_code)


def test_users_are_isolated(multi):
    alice, bob = {"Comfy-User": "alice_1"}, {"comfy-user": "bob_2"}
    name = quote("workflows/w.json", safe="")
    assert multi.post(f"/api/userdata/{name}", content=b"A", headers=alice).status_code == 200
    assert multi.post(f"/api/userdata/{name}", content=b"B", headers=bob).status_code == 200
    assert multi.get(f"/api/userdata/{name}", headers=alice).content == b"A"
    assert multi.get(f"/api/userdata/{name}", headers=bob).content == b"B"
    assert multi.post("/api/settings/s", json="a", headers=alice).status_code == 200
    assert multi.get("/api/settings", headers=alice).json() == {"s": "a"}
    assert multi.get("/api/settings", headers=bob).json() == {}
    user_dir = os.path.join(multi.base_dir, "user")
    assert open(os.path.join(user_dir, "alice_1", "workflows", "w.json")).read() == "A"
    assert open(os.path.join(user_dir, "bob_2", "workflows", "w.json")).read() == "B"
    assert os.path.isfile(os.path.join(user_dir, "alice_1", "comfy.settings.json"))
    # Neither can reach the other's files or users.json through paths.
    for raw in ("..%2Fbob_2%2Fworkflows%2Fw.json", "..%2Fusers.json"):
        assert multi.get(f"/api/userdata/{raw}", headers=alice).status_code == 403
    assert multi.get("/api/userdata?dir=..%2Fbob_2", headers=alice).status_code == 403
    assert multi.get("/api/v2/userdata?path=..%2Fbob_2", headers=alice).status_code == 400


def test_new_user_can_store_at_once(multi):
    user_id = multi.post("/api/users", json={"username": "carol"}).json()
    assert user_id in multi.get("/api/users").json()["users"]
    headers = {"Comfy-User": user_id}
    assert multi.post("/api/settings/Comfy.X", json=1, headers=headers).status_code == 200
    assert os.path.isfile(os.path.join(multi.base_dir, "user", user_id, "comfy.settings.json"))


def test_header_is_ignored_in_single_user_mode(make_server):
    srv = make_server()
    r = srv.post("/api/userdata/x.json", content=b"x", headers={"Comfy-User": "someone"})
    assert r.status_code == 200
    assert os.path.isfile(os.path.join(srv.base_dir, "user", "default", "x.json"))
    assert srv.get("/api/settings", headers={"Comfy-User": "__system"}).status_code == 200
