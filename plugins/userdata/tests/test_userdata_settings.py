"""``/settings`` and ``/settings/{id}``: storage, corruption and concurrent writes."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx


def settings_file(srv) -> str:
    return os.path.join(srv.base_dir, "user", "default", "comfy.settings.json")


def test_settings_roundtrip(make_server):
    srv = make_server()
    assert srv.get("/api/settings").json() == {}
    assert srv.get("/api/settings/Comfy.Missing").json() is None
    assert not os.path.exists(settings_file(srv))  # reading creates nothing

    # The frontend sends these bodies without a JSON content type.
    r = srv.post("/api/settings/Comfy.TutorialCompleted", content=b"true",
                 headers={"content-type": "text/plain;charset=UTF-8"})
    assert r.status_code == 200 and r.content == b""
    assert srv.post("/settings", content=json.dumps({"a.b": 1, "c": [1, 2]})).status_code == 200
    assert srv.post("/api/settings", json={"a.b": 2}).status_code == 200
    assert srv.get("/settings").json() == {"Comfy.TutorialCompleted": True, "a.b": 2, "c": [1, 2]}
    assert srv.get("/api/settings/a.b").json() == 2
    assert srv.post("/api/settings/Comfy.Obj", json={"x": None}).status_code == 200
    assert srv.get("/api/settings/Comfy.Obj").json() == {"x": None}

    # Ids are decoded once and may hold any character.
    odd = "Pack.Set ting/%41"
    assert srv.post(f"/api/settings/{quote(odd, safe='')}", json="v").status_code == 200
    assert srv.get(f"/api/settings/{quote(odd, safe='')}").json() == "v"
    assert odd in srv.get("/api/settings").json()

    with open(settings_file(srv)) as f:
        text = f.read()
    assert text.startswith('{\n    "')  # four-space indentation, like ComfyUI
    assert sorted(os.listdir(os.path.dirname(settings_file(srv)))) == [".comfy.settings.json.lock",
                                                                        "comfy.settings.json"]


def test_bad_bodies_are_400(make_server):
    srv = make_server()
    assert srv.post("/api/settings", json=[1, 2]).status_code == 400
    assert srv.post("/api/settings", content=b"{nope").status_code == 400
    assert srv.post("/api/settings", content=b"").status_code == 400
    assert srv.post("/api/settings/x", content=b"{nope").status_code == 400
    assert srv.get("/api/settings").json() == {}


def test_corrupt_file_is_kept_aside(make_server):
    srv = make_server()
    path = settings_file(srv)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"half": ')
    assert srv.get("/api/settings").status_code == 200
    assert srv.get("/api/settings").json() == {}
    assert srv.post("/api/settings/new", json=1).status_code == 200
    assert srv.get("/api/settings").json() == {"new": 1}
    backups = [n for n in os.listdir(os.path.dirname(path)) if n.startswith("comfy.settings.json.corrupt-")]
    assert len(backups) == 1
    with open(os.path.join(os.path.dirname(path), backups[0])) as f:
        assert f.read() == '{"half": '


def test_concurrent_writes_lose_no_update(make_server):
    srv = make_server()
    count = 60

    def one(i: int) -> int:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            if i % 2:
                return client.post(f"/api/settings/key.{i}", content=str(i)).status_code
            return client.post("/api/settings", json={f"key.{i}": i}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(count)))
    assert statuses == [200] * count
    assert srv.get("/api/settings").json() == {f"key.{i}": i for i in range(count)}
    with open(settings_file(srv)) as f:
        assert json.load(f) == {f"key.{i}": i for i in range(count)}
