"""Malformed manager requests get a 4xx with a reason, pages of other origins get nothing, and no
answer shows a server path."""

from __future__ import annotations

import pytest

BAD_FILES = [{"a": 1}, 5, [True], [{"url": "x"}], [""], "https://example.invalid/a/b"]


@pytest.mark.parametrize("body", [{"url": [1]}, {"cnr_id": 5}, {"url": {"x": 1}}, {"cnr_id": ["a"]}])
def test_import_fail_info_refuses_non_string_keys(start_server, body):
    srv = start_server()
    r = srv.post("/customnode/import_fail_info", json=body)
    assert r.status_code == 400 and "must be strings" in r.text
    assert "unhandled error" not in srv.log()


def test_queue_refuses_malformed_pack_descriptions(start_server):
    srv = start_server()
    for kind in ("install", "reinstall", "uninstall", "update", "fix", "disable"):
        for files in BAD_FILES:
            r = srv.post(f"/manager/queue/{kind}", json={"id": "clipseg", "files": files})
            assert r.status_code == 400, (kind, files, r.status_code, r.text)
            assert "files" in r.text
        r = srv.post(f"/manager/queue/{kind}", json={"id": {"x": 1}})
        assert r.status_code == 400 and "id" in r.text
        r = srv.post(f"/manager/queue/{kind}", json={"id": "clipseg", "mode": 3})
        assert r.status_code == 400 and "mode" in r.text
    assert srv.get("/manager/queue/status").json()["total_count"] == 0  # nothing malformed was queued
    assert "unhandled error" not in srv.log()


def test_other_origins_cannot_install_a_git_pack(start_server):
    srv = start_server("--manager-security-level", "normal-")
    hostile = {"Origin": "null", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
    r = srv.post("/api/customnode/install/git_url", content="https://example.invalid/a/b", headers=hostile)
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden_origin", r.text
    no_origin = {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
    assert srv.post("/customnode/install/git_url", content="https://example.invalid/a/b",
                    headers=no_origin).status_code == 403
    assert srv.get("/manager/queue/status").json()["total_count"] == 0
    # the same request from the app's own page reaches the manager (which then fails to clone)
    own = {"Origin": srv.url, "Sec-Fetch-Site": "same-origin", "Content-Type": "text/plain"}
    r = srv.post("/api/customnode/install/git_url", content="https://example.invalid/a/b", headers=own)
    assert r.status_code != 403, r.text


def test_channel_list_shows_no_server_paths(start_server):
    srv = start_server()
    for path in ("/manager/channel_url_list", "/v2/manager/channel_url_list"):
        channels = srv.get(path).json()
        assert channels["selected"] == "default"
        assert "default::local" in channels["list"]
        assert srv.base_dir not in str(channels) and "site-packages" not in str(channels)
        assert all("::/" not in item for item in channels["list"])


def test_v2_routes_share_the_json_rules(start_server):
    srv = start_server()
    deep = '{"ui_id": "x", "kind": "install", "params": ' + "[" * 200 + "]" * 200 + "}"
    r = srv.post("/v2/manager/queue/task", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested deeper than 128" in r.text, r.text
    r = srv.post("/v2/manager/queue/task", content='{"ui_id": "x"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and "application/json" in r.text, r.text
    for body in ({"url": [1]}, {"cnr_id": 5}):
        r = srv.post("/v2/customnode/import_fail_info", json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    assert srv.get("/v2/manager/queue/status").json()["total_count"] == 0
    assert "unhandled error" not in srv.log()


def test_system_stats_argv_stays_redacted_when_the_manager_adds_its_flags(start_server, tmp_path):
    """The manager puts --enable-manager into argv when it was set elsewhere; secrets stay hidden."""
    key = tmp_path / "private-server.key"
    srv = start_server("--tls-keyfile", str(key), env={"COMFY_KERNEL_ENABLE_MANAGER": "1"})
    argv = srv.get("/system_stats").json()["system"]["argv"]
    assert "--enable-manager" in argv
    assert argv[argv.index("--tls-keyfile") + 1] == "***" and str(key) not in argv
