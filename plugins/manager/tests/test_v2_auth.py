"""Under ``--auth`` (the multiuser plugin) every Manager 4 route is for administrators only."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import httpx
import pytest

from comfy_kernel.http import json_response
from comfy_kernel.identity import Identity
from comfy_kernel.testing import TEST_POSTGRES, server_database
from comfy_kernel_manager.security import admin_only

pytestmark = pytest.mark.skipif(not any(ep.name == "multiuser" for ep in entry_points(group="comfy_kernel.plugins")),
                                reason="needs comfy-kernel-multiuser")

ADMIN = ("admin", "admin-password-1")
READS = ["/api/v2/customnode/installed", "/api/v2/customnode/getmappings?mode=cache",
         "/api/v2/customnode/fetch_updates", "/api/v2/customnode/import_fail_info",
         "/api/v2/manager/is_legacy_manager_ui", "/api/v2/manager/queue/status", "/api/v2/manager/queue/history",
         "/api/v2/manager/queue/history_list", "/api/v2/manager/db_mode", "/api/v2/manager/policy/update",
         "/api/v2/manager/channel_url_list", "/api/v2/manager/version", "/api/v2/snapshot/getlist",
         "/api/v2/snapshot/get_current", "/api/v2/comfyui_manager/comfyui_versions"]
WRITES = [("/api/v2/manager/queue/task", {"kind": "disable", "params": {"node_name": "x"}, "ui_id": "a",
                                          "client_id": "c"}),
          ("/api/v2/manager/queue/install_model", {"name": "m", "type": "lora", "filename": "m.safetensors",
                                                   "url": "https://example.invalid/m", "ui_id": "b", "client_id": "c"}),
          ("/api/v2/manager/queue/start", None), ("/api/v2/manager/queue/reset", None),
          ("/api/v2/manager/queue/update_all?client_id=c&ui_id=u", None),
          ("/api/v2/manager/queue/update_comfyui?client_id=c&ui_id=u", None), ("/api/v2/manager/reboot", None),
          ("/api/v2/snapshot/save", None), ("/api/v2/snapshot/remove?target=x", None),
          ("/api/v2/snapshot/restore?target=x", None), ("/api/v2/manager/db_mode", {"value": "local"}),
          ("/api/v2/manager/policy/update", {"value": "nightly"}), ("/api/v2/manager/channel_url_list",
                                                                   {"value": "default"}),
          ("/api/v2/comfyui_manager/comfyui_switch_version", {"ver": "x", "client_id": "c", "ui_id": "u"}),
          ("/api/v2/customnode/import_fail_info", {"cnr_id": "x"}),
          ("/api/v2/customnode/import_fail_info_bulk", {"cnr_ids": ["x"]})]


def sign_in(url: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60.0)
    r = client.post("/api/auth/session", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return client


def test_only_administrators(start_server, tmp_path):
    base = tmp_path / "auth"
    base.mkdir()
    env = dict(os.environ)
    if os.environ.get(TEST_POSTGRES):  # the PostgreSQL run: the database the server on ``base`` will use
        env["COMFY_KERNEL_DATABASE"] = server_database(base)
    made = subprocess.run([sys.executable, "-m", "comfy_kernel.cli", "users", "create", "--admin", "--username",
                           ADMIN[0], "--password-stdin", "--base-directory", str(base)], input=ADMIN[1] + "\n",
                          capture_output=True, text=True, timeout=120, cwd=str(base), env=env)
    assert made.returncode == 0, made.stderr
    srv = start_server("--auth", "--enable-manager", "--auth-rate-limit", "10000", base=base)
    admin = sign_in(srv.url, *ADMIN)
    assert admin.post("/api/users", json={"username": "bob", "password": "bob-password-1"}).status_code == 200
    bob = sign_in(srv.url, "bob", "bob-password-1")
    anonymous = httpx.Client(base_url=srv.url, timeout=60.0)
    try:
        for path in READS:
            assert admin.get(path).status_code in (200, 201), path
            r = bob.get(path)
            assert r.status_code == 403, (path, r.text)
            assert anonymous.get(path).status_code == 401, path
        for path, body in WRITES:
            r = bob.post(path, json=body) if body is not None else bob.post(path)
            assert r.status_code == 403, (path, r.text)
            assert (anonymous.post(path, json=body) if body else anonymous.post(path)).status_code == 401, path
        # nothing a refused caller sent took effect; the administrator's own requests work
        assert admin.get("/api/v2/manager/db_mode").text == "cache"
        assert admin.get("/api/v2/manager/queue/status").json()["total_count"] == 0
        assert admin.post("/api/v2/manager/queue/task", json=WRITES[0][1]).status_code == 200
        assert admin.get("/api/v2/manager/queue/status").json()["pending_count"] == 1
        assert admin.post("/api/v2/manager/db_mode", json={"value": "local"}).status_code == 200
        assert admin.get("/api/v2/manager/db_mode").text == "local"
        # the frontend's switches are there for everyone (they say what the server can do)
        assert "--enable-manager" in bob.get("/api/system_stats").json()["system"]["argv"]
    finally:
        for client in (admin, bob, anonymous):
            client.close()


async def _ok(request):
    return json_response({"ok": True})


class _Request:
    def __init__(self, path: str, identity: Identity | None):
        self.method = "GET"
        self.url = httpx.URL("http://127.0.0.1" + path)
        self.state = type("State", (), {"identity": identity})()


@pytest.mark.parametrize(("identity", "status"), [
    (None, 200), (Identity(), 200), (Identity("u", authenticated=False), 200),
    (Identity("admin", authenticated=True, is_admin=True), 200), (Identity("bob", authenticated=True), 403)])
async def test_admin_only_wrapper(identity, status):
    """The plugin refuses signed-in non-administrators itself, whatever the auth plugin's route list says."""
    response = await admin_only(_ok)(_Request("/api/v2/snapshot/getlist", identity))
    assert response.status_code == status
