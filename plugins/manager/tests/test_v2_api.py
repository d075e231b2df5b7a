"""The Manager 4 API (``/api/v2/...``): the frontend's switches, every route's answers,
bad input, Manager 4's CSRF rule and the security levels.

Nothing here installs a pack (see ``test_v2_installs``): accepted tasks stay
queued, so a refused request can be told from an accepted one by its status.
"""

from __future__ import annotations

import json
import time

import pytest

from comfy_kernel import __version__ as kernel_version

KNOWN_MODEL = {"name": "TAEF1 Decoder", "type": "TAESD", "base": "FLUX.1", "save_path": "vae_approx",
               "filename": "taef1_decoder.pth", "url": "https://github.com/madebyollin/taesd/raw/main/taef1_decoder.pth"}
UNKNOWN_MODEL = {"name": "m", "type": "checkpoint", "save_path": "default", "filename": "m.safetensors",
                 "url": "https://example.invalid/m.safetensors"}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain;charset=UTF-8")


def task(kind: str, params: dict, ui_id: str, client_id: str = "tab") -> dict:
    return {"kind": kind, "params": params, "ui_id": ui_id, "client_id": client_id}


def ws_flags(srv) -> dict:
    with srv.ws(client_id="flags") as ws:
        ws.recv(timeout=10)  # status
        ws.send(json.dumps({"type": "feature_flags", "data": {"supports_manager_v4_ui": True}}))
        while True:
            msg = json.loads(ws.recv(timeout=10))
            if msg["type"] == "feature_flags":
                return msg["data"]


def test_frontend_switches(start_server, tmp_path):
    """--enable-manager reaches system.argv however it is given; the v4 flags follow the plugin."""
    srv = start_server("--enable-manager")
    argv = srv.get("/api/system_stats").json()["system"]["argv"]
    assert "--enable-manager" in argv and "--enable-manager-legacy-ui" not in argv
    flags = {"supports_v4": True, "supports_csrf_post": True}
    assert srv.get("/api/features").json()["extension"]["manager"] == flags
    assert ws_flags(srv)["extension"]["manager"] == flags
    assert srv.get("/api/v2/manager/is_legacy_manager_ui").json() == {"is_legacy_manager_ui": False}

    legacy = start_server(env={"COMFY_KERNEL_ENABLE_MANAGER_LEGACY_UI": "1"})
    argv = legacy.get("/api/system_stats").json()["system"]["argv"]
    assert "--enable-manager" in argv and "--enable-manager-legacy-ui" in argv
    assert legacy.get("/api/v2/manager/is_legacy_manager_ui").json() == {"is_legacy_manager_ui": True}

    plain = start_server()
    assert "--enable-manager" not in plain.get("/api/system_stats").json()["system"]["argv"]

    without = start_server("--disable-plugins", "manager")
    assert "extension" not in without.get("/api/features").json()
    assert "extension" not in ws_flags(without)
    assert without.get("/api/v2/manager/version").status_code == 404


def test_read_routes(start_server, tmp_path):
    base = tmp_path / "reads"
    broken = base / "custom_nodes" / "BrokenPack"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('this pack cannot import')\n")
    srv = start_server(base=base)

    installed = srv.get("/api/v2/customnode/installed").json()
    assert installed == {"BrokenPack": {"ver": "unknown", "cnr_id": "", "aux_id": None, "enabled": True}}
    assert srv.get("/api/v2/customnode/installed?mode=imported").json() == installed
    assert srv.get("/v2/customnode/installed?mode=other").status_code == 400
    assert srv.get("/api/v2/manager/queue/status").json() == {
        "total_count": 0, "done_count": 0, "in_progress_count": 0, "pending_count": 0, "is_processing": False}
    assert srv.get("/api/v2/manager/queue/status?client_id=c1").json()["client_id"] == "c1"
    assert srv.get("/api/v2/manager/queue/history").json() == {"history": {}}
    assert srv.get("/api/v2/manager/queue/history?max_items=x").status_code == 400
    assert srv.get("/api/v2/manager/queue/history?offset=-5").status_code == 400
    assert srv.get("/api/v2/manager/queue/history?id=nope").status_code == 400
    assert srv.get("/api/v2/manager/queue/history_list").json() == {"ids": []}
    assert srv.get("/api/v2/manager/version").text == "V4.2.2"
    assert srv.get("/api/v2/manager/db_mode").text == "cache"
    assert srv.get("/api/v2/manager/policy/update").text == "stable"
    channels = srv.get("/api/v2/manager/channel_url_list").json()
    assert channels["selected"] == "default" and channels["list"][0].startswith("default::")
    mappings = srv.get("/api/v2/customnode/getmappings?mode=cache").json()
    assert all(isinstance(v[0], list) and isinstance(v[1], dict) for v in mappings.values())
    assert len(mappings) > 1000
    assert srv.get("/api/v2/customnode/fetch_updates").json() == {"updatable": []}
    assert srv.get("/api/v2/snapshot/getlist").json() == {"items": []}
    assert srv.get("/api/v2/snapshot/get_current").json()["file_custom_nodes"] == [
        {"filename": "BrokenPack", "disabled": False}]
    current = f"comfy-kernel {kernel_version}"
    assert srv.get("/api/v2/comfyui_manager/comfyui_versions").json() == {"versions": [current], "current": current}

    # import failures: by name or URL, one or in bulk, and all of them with a bare GET
    failed = srv.get("/api/v2/customnode/import_fail_info").json()
    assert list(failed) == ["BrokenPack"] and "cannot import" in failed["BrokenPack"]["error"]
    r = srv.post("/api/v2/customnode/import_fail_info", json={"cnr_id": "BrokenPack"})
    assert r.status_code == 200 and "RuntimeError" in r.json()["traceback"]
    assert srv.get("/api/v2/customnode/import_fail_info?url=https://example.invalid/a/BrokenPack").status_code == 200
    assert srv.post("/api/v2/customnode/import_fail_info", json={"cnr_id": "other"}).status_code == 400
    assert srv.post("/api/v2/customnode/import_fail_info", json={"cnr_id": 5}).status_code == 400
    bulk = srv.post("/api/v2/customnode/import_fail_info_bulk", json={"cnr_ids": ["BrokenPack", "other"]}).json()
    assert "cannot import" in bulk["BrokenPack"]["error"] and bulk["other"] is None
    for bad in ({}, {"cnr_ids": "BrokenPack"}, {"cnr_ids": [1]}):
        assert srv.post("/api/v2/customnode/import_fail_info_bulk", json=bad).status_code == 400


def test_writes_and_bad_input(start_server):
    srv = start_server()  # security level: normal
    post = srv.post
    # settings: JSON {"value"}; a bad value is a 400 and changes nothing
    assert post("/api/v2/manager/db_mode", json={"value": "local"}).status_code == 200
    assert srv.get("/api/v2/manager/db_mode").text == "local"
    assert srv.get("/manager/db_mode").text == "local"  # the same setting as the 3.x route
    assert post("/api/v2/manager/db_mode", json={"value": "nowhere"}).status_code == 400
    assert post("/api/v2/manager/db_mode", json={}).status_code == 400
    assert post("/api/v2/manager/policy/update", json={"value": "nightly"}).status_code == 200
    assert srv.get("/api/v2/manager/policy/update").text == "nightly"
    assert post("/api/v2/manager/channel_url_list", json={"value": "default"}).status_code == 200
    assert post("/api/v2/manager/channel_url_list", json={"value": "elsewhere"}).status_code == 400
    assert srv.get("/api/v2/manager/db_mode").text == "local"

    # tasks: validated before they are queued
    bad_tasks = [[], {"kind": "explode", "params": {}, "ui_id": "a", "client_id": "c"},
                 task("install", {"id": "x"}, ""), {"kind": "install", "params": {"id": "x"}, "ui_id": "a"},
                 task("install", [], "a"), task("install", {}, "a"), task("uninstall", {"id": "x"}, "a"),
                 task("enable", {"node_name": "x"}, "a"), task("install", {"id": "x", "selected_version": 3}, "a"),
                 task("install", {"id": "x"}, "a b"), task("install-model", {"url": "file:///etc/passwd",
                                                                             "filename": "x"}, "a"),
                 task("install-model", {**KNOWN_MODEL, "filename": "../x.pth"}, "a")]
    for body in bad_tasks:
        r = post("/api/v2/manager/queue/task", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"] == r.json()["message"]
    assert post("/api/v2/manager/queue/task", content=b"{not json",
                headers={"content-type": "application/json"}).status_code == 400
    assert post("/api/v2/manager/queue/task").status_code == 400  # no body
    assert srv.get("/api/v2/manager/queue/status").json()["total_count"] == 0

    ok = task("install", {"id": "clipseg", "selected_version": "latest", "mode": "cache", "channel": "default"},
              "t1", "tab1")
    assert post("/api/v2/manager/queue/task", json=ok).status_code == 200
    assert post("/api/v2/manager/queue/task", json=ok).status_code == 409  # same ui_id still queued
    assert post("/api/v2/manager/queue/task", json=task("disable", {"node_name": "clipseg"}, "t2", "tab2")
                ).status_code == 200
    assert post("/api/v2/manager/queue/install_model", json={**KNOWN_MODEL, "ui_id": "m1", "client_id": "tab1"}
                ).status_code == 200
    assert post("/api/v2/manager/queue/install_model", json=KNOWN_MODEL).status_code == 400  # no ui_id
    status = srv.get("/api/v2/manager/queue/status").json()
    assert status["total_count"] == 3 and status["pending_count"] == 3 and not status["is_processing"]
    assert srv.get("/api/v2/manager/queue/status?client_id=tab1").json()["pending_count"] == 2
    assert post("/api/v2/manager/queue/update_all?client_id=tab1").status_code == 400  # ui_id missing
    assert post("/api/v2/manager/queue/update_all?client_id=tab1&ui_id=all&mode=nope").status_code == 400
    assert post("/api/v2/manager/queue/update_all?client_id=tab1&ui_id=all").status_code == 200  # nothing installed
    assert post("/api/v2/manager/queue/update_comfyui?client_id=tab1").status_code == 400
    assert post("/api/v2/manager/queue/reset").status_code == 200
    assert srv.get("/api/v2/manager/queue/status").json()["total_count"] == 0

    # update_comfyui runs and answers truthfully; the finished task is in the history and in a batch
    assert post("/api/v2/manager/queue/update_comfyui?client_id=tab1&ui_id=u1").status_code == 200
    assert post("/api/v2/manager/queue/start").status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not srv.get("/api/v2/manager/queue/history").json()["history"]:
        time.sleep(0.2)
    item = srv.get("/api/v2/manager/queue/history?ui_id=u1").json()["history"]
    assert item["kind"] == "update-comfyui" and item["status"]["status_str"] == "error"
    assert "pip" in item["result"] and item["client_id"] == "tab1"
    assert srv.get("/api/v2/manager/queue/history?client_id=other").json() == {"history": {}}
    assert srv.get("/api/v2/manager/queue/status?client_id=tab1").json()["done_count"] == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not srv.get("/api/v2/manager/queue/history_list").json()["ids"]:
        time.sleep(0.2)
    [batch_id] = srv.get("/api/v2/manager/queue/history_list").json()["ids"]
    batch = srv.get(f"/api/v2/manager/queue/history?id={batch_id}").json()
    assert batch["batch_id"] == batch_id and batch["total_operations"] == 1 and batch["failed_operations"] == 1
    assert batch["operations"][0]["operation_type"] == "update-comfyui"
    assert item["batch_id"] == batch_id

    # snapshots: save, list, remove by query target; unknown targets are 400
    name = post("/api/v2/snapshot/save").json()["name"]
    assert srv.get("/api/v2/snapshot/getlist").json() == {"items": [name]}
    assert post(f"/api/v2/snapshot/restore?target={name}").json() == {"target": name, "ok": True, "steps": []}
    assert post("/api/v2/snapshot/restore?target=nope").status_code == 400
    assert post("/api/v2/snapshot/remove").status_code == 400
    assert post("/api/v2/snapshot/remove?target=../../user").status_code == 400
    assert post(f"/api/v2/snapshot/remove?target={name}").status_code == 200
    assert srv.get("/api/v2/snapshot/getlist").json() == {"items": []}


def test_csrf_rule(start_server):
    """No state change from a plain form post, a non-JSON body, or another site."""
    srv = start_server("--manager-security-level", "weak")
    body = json.dumps(task("install", {"id": "clipseg"}, "csrf")).encode()
    writes = ["/api/v2/manager/queue/task", "/api/v2/manager/queue/install_model", "/api/v2/manager/queue/start",
              "/api/v2/manager/queue/reset", "/api/v2/manager/queue/update_all?client_id=c&ui_id=u",
              "/api/v2/manager/queue/update_comfyui?client_id=c&ui_id=u", "/api/v2/manager/reboot",
              "/api/v2/snapshot/save", "/api/v2/snapshot/remove?target=x", "/api/v2/snapshot/restore?target=x",
              "/api/v2/manager/db_mode", "/api/v2/manager/policy/update", "/api/v2/manager/channel_url_list",
              "/api/v2/comfyui_manager/comfyui_switch_version", "/api/v2/customnode/import_fail_info",
              "/api/v2/customnode/import_fail_info_bulk"]
    for path in writes:
        for kind in FORM_TYPES:
            r = srv.post(path, content=body, headers={"content-type": kind})
            assert r.status_code == 400 and "application/json" in r.json()["error"], (path, kind, r.text)
        r = srv.post(path, content=body, headers={"content-type": "application/json", "sec-fetch-site": "cross-site"})
        assert r.status_code == 403, (path, r.text)
    # a JSON body must say so, even without a form content type
    for headers in ({"content-type": "application/xml"}, {}):
        r = srv.post("/api/v2/manager/queue/task", content=body, headers=headers)
        assert r.status_code == 400, r.text
        r = srv.post("/api/v2/manager/db_mode", content=b'{"value": "local"}', headers=headers)
        assert r.status_code == 400, r.text
    assert srv.get("/api/v2/manager/queue/status").json()["total_count"] == 0
    assert srv.get("/api/v2/snapshot/getlist").json() == {"items": []}
    assert srv.get("/api/v2/manager/db_mode").text == "cache"
    # (the JSON forms pass: comfy-kernel "switches" only to the version it is)
    switch = {"ver": f"comfy-kernel {kernel_version}", "client_id": "c", "ui_id": "s"}
    assert srv.post("/api/v2/comfyui_manager/comfyui_switch_version", json=switch).status_code == 200
    r = srv.post("/api/v2/comfyui_manager/comfyui_switch_version", json={**switch, "ver": "v0.3.0"})
    assert r.status_code == 400 and "pip" in r.json()["message"]
    assert srv.proc is not None and srv.proc.poll() is None  # the reboot was refused too
    # the v2 writes have no GET form (an <img src> cannot trigger them)
    assert srv.get("/api/v2/manager/queue/start").status_code in (404, 405)
    assert srv.get("/api/v2/manager/reboot").status_code in (404, 405)
    assert srv.proc.poll() is None


# (route, body or None, the operation's risk). Accepted answers differ (200, or 400 for a
# snapshot that does not exist / a version comfy-kernel cannot switch to); refusals are 403.
RISKY = [
    ("/api/v2/manager/queue/task", task("install", {"id": "clipseg", "selected_version": "latest"}, "r1"), "middle"),
    ("/api/v2/manager/queue/task", task("install", {"id": "nowhere", "selected_version": "nightly",
                                                    "repository": "https://example.invalid/a/nowhere"}, "r2"), "high"),
    ("/api/v2/manager/queue/task", task("uninstall", {"node_name": "clipseg"}, "r3"), "middle"),
    ("/api/v2/manager/queue/task", task("update", {"node_name": "clipseg"}, "r4"), "middle"),
    ("/api/v2/manager/queue/task", task("fix", {"node_name": "clipseg", "node_ver": "1"}, "r5"), "middle"),
    ("/api/v2/manager/queue/task", task("update-comfyui", {}, "r6"), "middle"),
    ("/api/v2/manager/queue/task", task("disable", {"node_name": "clipseg"}, "r7"), "low"),
    ("/api/v2/manager/queue/task", task("enable", {"cnr_id": "clipseg"}, "r8"), "low"),
    ("/api/v2/manager/queue/task", task("install-model", KNOWN_MODEL, "r9"), "middle"),
    ("/api/v2/manager/queue/task", task("install-model", UNKNOWN_MODEL, "r10"), "high"),
    ("/api/v2/manager/queue/install_model", {**KNOWN_MODEL, "ui_id": "r11", "client_id": "tab"}, "middle"),
    ("/api/v2/manager/queue/install_model", {**UNKNOWN_MODEL, "ui_id": "r12", "client_id": "tab"}, "high"),
    ("/api/v2/manager/queue/update_all?client_id=tab&ui_id=r13", None, "middle"),
    ("/api/v2/manager/queue/update_comfyui?client_id=tab&ui_id=r14", None, "middle"),
    ("/api/v2/snapshot/remove?target=none", None, "middle"),
    ("/api/v2/snapshot/restore?target=none", None, "middle"),
    ("/api/v2/comfyui_manager/comfyui_switch_version", {"ver": "v0.3.0", "client_id": "tab", "ui_id": "r15"}, "high"),
    ("/api/v2/manager/db_mode", {"value": "remote"}, "low"),
    ("/api/v2/manager/policy/update", {"value": "stable"}, "low"),
    ("/api/v2/manager/channel_url_list", {"value": "default"}, "low"),
    ("/api/v2/snapshot/save", None, "low"),
    ("/api/v2/manager/queue/reset", None, "low"),
]
ALLOWED = {"strong": {"low"}, "normal": {"low", "middle"}, "normal-": {"low", "middle", "high"},
           "weak": {"low", "middle", "high"}}  # normal- allows high here because the tests listen on loopback


@pytest.mark.parametrize("level", ["strong", "normal", "normal-", "weak"])
def test_security_levels(start_server, level):
    srv = start_server("--manager-security-level", level)
    for path, body, risk in RISKY:
        r = srv.post(path, json=body) if body is not None else srv.post(path)
        if risk in ALLOWED[level]:
            assert r.status_code != 403, (level, path, body, r.text)
        else:
            assert r.status_code == 403 and "security_level" in r.json()["error"], (level, path, r.text)
    if level == "strong":
        r = srv.post("/api/v2/manager/reboot")
        assert r.status_code == 403
        assert srv.proc is not None and srv.proc.poll() is None
    # the queue never started: whatever was accepted is still pending (reset ran last)
    assert srv.get("/api/v2/manager/queue/status").json()["in_progress_count"] == 0
