"""``/users`` in both modes, and the user id rules."""

from __future__ import annotations

import json
import os
import re


def user_root(srv, user: str = "default") -> str:
    return os.path.join(srv.base_dir, "user", user)


def test_single_user_users_reports_migration(make_server):
    srv = make_server()
    assert srv.get("/api/users").json() == {"storage": "server", "migrated": False}
    assert srv.get("/users").json() == {"storage": "server", "migrated": False}
    assert srv.post("/api/settings/Comfy.A", content=b"1").status_code == 200
    assert srv.get("/api/users").json() == {"storage": "server", "migrated": True}
    assert os.path.isdir(user_root(srv))


def test_create_user_and_rules(make_server):
    srv = make_server("--multi-user")
    assert srv.get("/api/users").json() == {"storage": "server", "users": {}}
    r = srv.post("/api/users", json={"username": "  Bob Smith!! "})
    assert r.status_code == 200
    user_id = r.json()
    assert re.fullmatch(r"Bob-Smith-_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", user_id)
    assert srv.get("/api/users").json() == {"storage": "server", "users": {user_id: "Bob Smith!!"}}
    with open(os.path.join(srv.base_dir, "user", "users.json")) as f:
        assert json.load(f) == {user_id: "Bob Smith!!"}

    dup = srv.post("/api/users", json={"username": "Bob Smith!!"})
    assert dup.status_code == 400 and dup.json() == {"error": "Duplicate username."}
    for body in ({"username": "   "}, {"username": 3}, {}, []):
        assert srv.post("/api/users", json=body).status_code == 400
    assert srv.post("/api/users", content=b"not json").status_code == 400
    # Ids starting with "__" are reserved for system users.
    assert srv.post("/api/users", json={"username": "__system"}).status_code == 400


def test_users_json_is_read_at_start(make_server, tmp_path):
    base = tmp_path / "seeded"
    (base / "user").mkdir(parents=True)
    (base / "user" / "users.json").write_text(json.dumps({"alice_1": "alice"}))
    srv = make_server("--multi-user", base=base)
    assert srv.get("/users").json()["users"] == {"alice_1": "alice"}
