"""Security levels, configuration, and the cross-site GET guard."""

from __future__ import annotations

import pytest

from comfy_kernel_manager.security import allowed, is_loopback_listen

CATALOG_PACK = {"id": "clipseg", "version": "unknown", "ui_id": "x"}  # in the bundled catalog (copy pack)
UNKNOWN_PACK = {"id": "nowhere", "install_type": "git-clone", "files": ["https://example.invalid/a/nowhere"]}


@pytest.mark.parametrize(("level", "risk", "local", "expected"), [
    ("strong", "middle", True, False), ("strong", "high", True, False),
    ("normal", "middle", True, True), ("normal", "high", True, False),
    ("normal-", "high", True, True), ("normal-", "high", False, False), ("normal-", "middle", False, True),
    ("weak", "high", False, True), ("weak", "block", True, False), ("strong", "low", False, True),
])
def test_level_matrix(level, risk, local, expected):
    assert allowed(level, risk, local) is expected


def test_loopback_detection():
    assert is_loopback_listen("127.0.0.1") and is_loopback_listen("localhost,::1")
    assert not is_loopback_listen("0.0.0.0,::") and not is_loopback_listen("192.168.1.4")


def test_strong_level_from_config_file(start_server, tmp_path):
    base = tmp_path / "strong"
    (base / "user" / "__manager").mkdir(parents=True)
    (base / "user" / "__manager" / "config.ini").write_text("[default]\nsecurity_level = strong\n")
    srv = start_server(base=base)
    assert srv.get("/manager/security_level").json() == {"security_level": "strong", "local": True}
    assert "strong" in srv.get("/manager/notice").text
    assert srv.post("/manager/queue/install", json=CATALOG_PACK).status_code == 403
    assert srv.post("/manager/queue/uninstall", json=CATALOG_PACK).status_code == 403
    assert srv.get("/manager/reboot").status_code == 403
    assert srv.post("/snapshot/remove", json={"target": "x"}).status_code == 403
    r = srv.post("/customnode/install/git_url", content="https://example.invalid/a/b")
    assert r.status_code == 403 and "security_level" in r.text
    assert srv.get("/manager/queue/status").status_code == 200
    assert srv.get("/manager/queue/status").json()["total_count"] == 0


def test_normal_level_and_cross_site_get(start_server):
    srv = start_server()  # default level: normal
    assert srv.post("/customnode/install/git_url", content="https://example.invalid/a/b").status_code == 403
    assert srv.post("/customnode/install/pip", content="anything").status_code == 403
    assert srv.post("/manager/queue/install", json=UNKNOWN_PACK).status_code == 403
    assert srv.post("/manager/queue/install", json=CATALOG_PACK).status_code == 200
    model = {"name": "m", "type": "checkpoint", "save_path": "default", "filename": "m.safetensors",
             "url": "https://example.invalid/m.safetensors"}
    assert srv.post("/manager/queue/install_model", json=model).status_code == 403
    assert srv.get("/manager/queue/status").json()["total_count"] == 1
    assert srv.post("/manager/queue/reset").status_code == 200  # the POST form
    assert srv.get("/manager/queue/status").json()["total_count"] == 0
    assert srv.post("/manager/queue/update_all").json() == {"queued": 0}
    # a page on another site cannot trigger state changes with GET
    evil = {"Sec-Fetch-Site": "cross-site"}
    assert srv.get("/snapshot/save", headers=evil).status_code == 403
    assert srv.get("/manager/queue/start", headers=evil).status_code == 403
    assert srv.get("/manager/db_mode?value=local", headers=evil).status_code == 403
    assert srv.get("/snapshot/save", headers={"Referer": "http://evil.example/x"}).status_code == 403
    assert srv.get("/manager/db_mode").text == "cache"
    assert srv.get("/snapshot/getlist").json() == {"items": []}
    assert srv.get("/snapshot/save", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert len(srv.get("/snapshot/getlist").json()["items"]) == 1
