"""The hub on an ``--auth`` server (the multiuser plugin): real identities and workspaces.

Skipped when the multiuser plugin is not installed or cannot start here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec

import httpx
import pytest
from hub_helpers import disable_all_but

from comfy_kernel.testing import TEST_POSTGRES, ServerProcess, server_database

pytestmark = pytest.mark.skipif(find_spec("comfy_kernel_multiuser") is None or find_spec("cryptography") is None,
                                reason="the multiuser plugin is not installed")
ADMIN = ("admin", "admin-password-1")


def signed_in(url: str, username: str, password: str) -> tuple[httpx.Client, dict]:
    client = httpx.Client(base_url=url, timeout=60.0)
    r = client.post("/api/auth/session", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return client, client.get("/api/user").json()


@pytest.fixture(scope="module")
def auth(tmp_path_factory):
    from cryptography.fernet import Fernet

    base = tmp_path_factory.mktemp("hubauth")
    env = dict(os.environ)
    if os.environ.get(TEST_POSTGRES):  # the PostgreSQL run: the database the server on ``base`` will use
        env["COMFY_KERNEL_DATABASE"] = server_database(base)
    done = subprocess.run([sys.executable, "-m", "comfy_kernel.cli", "users", "create", "--admin", "--username",
                           ADMIN[0], "--password-stdin", "--base-directory", str(base)],
                          input=ADMIN[1] + "\n", capture_output=True, text=True, timeout=120, cwd=str(base), env=env)
    if done.returncode != 0:
        pytest.skip(f"could not create an administrator: {done.stderr[-300:]}")
    args = [*disable_all_but("hub", "userdata", "assets", "multiuser"), "--auth", "--auth-rate-limit", "10000"]
    server = ServerProcess(base, *args, env={"COMFY_KERNEL_SECRETS_KEY": Fernet.generate_key().decode()})
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        pytest.skip(f"an --auth server does not start here: {str(exc)[-300:]}")
    admin, _ = signed_in(server.url, *ADMIN)
    users = {}
    for name in ("alice", "bob"):
        r = admin.post("/api/users", json={"username": name, "password": f"pw-{name}-secret"})
        assert r.status_code == 200, r.text
        users[name] = signed_in(server.url, name, f"pw-{name}-secret")
    yield server, users
    for client, _ in users.values():
        client.close()
    admin.close()
    server.stop()
    server.client.close()


def test_workflows_belong_to_the_signed_in_workspace(auth):
    server, users = auth
    (alice, alice_me), (bob, _) = users["alice"], users["bob"]
    anonymous = httpx.Client(base_url=server.url)
    assert anonymous.get("/api/workflows").status_code == 401
    # A claimed Comfy-User header means nothing here.
    assert anonymous.get("/api/workflows", headers={"Comfy-User": alice_me["id"]}).status_code == 401
    r = alice.post("/api/workflows", json={"name": "secret", "workflow_json": {"nodes": [], "links": []}})
    assert r.status_code == 201, r.text
    wf = r.json()
    assert wf["created_by"] == alice_me["id"]
    assert bob.get(f"/api/workflows/{wf['id']}").status_code == 404
    assert [w["id"] for w in alice.get("/api/workflows").json()["data"]] == [wf["id"]]
    assert bob.get("/api/workflows").json()["data"] == []
    r = alice.post(f"/api/workflows/{wf['id']}/publish", json={"asset_ids": []})
    assert r.status_code == 200, r.text
    share = r.json()["share_id"]
    assert bob.get(f"/api/workflows/published/{share}").json()["name"] == "secret"
    assert bob.request("DELETE", f"/api/hub/workflows/{share}").status_code == 403


def test_hub_profile_is_per_workspace(auth):
    server, users = auth
    (alice, alice_me), (bob, bob_me) = users["alice"], users["bob"]
    # The profile names the caller's own workspace, not someone else's.
    assert alice.post("/api/hub/profiles", json={"workspace_id": bob_me["workspace_id"],
                                                 "username": "alice"}).status_code == 404
    r = alice.post("/api/hub/profiles", json={"workspace_id": alice_me["workspace_id"], "username": "alice"})
    assert r.status_code == 201, r.text
    assert alice.get("/api/hub/profiles/me").json()["username"] == "alice"
    assert bob.get("/api/hub/profiles/me").status_code == 404
    assert bob.request("PATCH", "/api/hub/profiles/alice", json={"description": "x"}).status_code == 403
    check = bob.get("/api/hub/profiles/check", params={"username": "alice"}).json()
    assert check["available"] is False and check["suggestions"]
