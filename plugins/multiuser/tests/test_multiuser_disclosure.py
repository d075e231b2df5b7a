"""What an ``--auth`` server must not disclose: secrets from its command line, other users' queue
sizes, and absolute server paths to users who are not administrators."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from websockets.sync.client import connect

from plugins.multiuser.tests.conftest import ADMIN, SECRETS_KEY, User

LEAKY_PACK = '''
import os
print(f"pack sees the key {os.environ.get('LEAK_CHECK_KEY')} and postgresql://svc:pw-in-url@db/x", flush=True)
NODE_CLASS_MAPPINGS = {}
'''


def test_secrets_key_on_the_command_line_is_redacted_and_warned(make_auth_server, tmp_path):
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "leaky.py").write_text(LEAKY_PACK)
    server = make_auth_server("--secrets-key", SECRETS_KEY, "--auth-external-jwks",
                              "https://svc:jwks-pass@idp.example/jwks.json", base=base,
                              env={"LEAK_CHECK_KEY": SECRETS_KEY})
    stats = server.get("/api/system_stats")  # public: no sign-in
    assert stats.status_code == 200
    argv = stats.json()["system"]["argv"]
    assert argv[argv.index("--secrets-key") + 1] == "***"
    assert "https://svc:***@idp.example/jwks.json" in argv
    assert SECRETS_KEY not in stats.text and "jwks-pass" not in stats.text
    admin = User(server, *ADMIN)
    logs = admin.get("/internal/logs").text + json.dumps(admin.get("/internal/logs/raw").json())
    assert "pack sees the key ***" in logs and "postgresql://svc:***@db/x" in logs
    assert SECRETS_KEY not in logs and "pw-in-url" not in logs
    console = server.log()
    assert SECRETS_KEY not in console and "pw-in-url" not in console
    assert "--secrets-key was given on the command line" in console
    # the key still works: secrets are stored and read back
    created = admin.post("/api/secrets", json={"name": "k", "provider": "HuggingFace", "secret_value": "v"})
    assert created.status_code in (200, 201), created.text


def _statuses(ws, seconds: float) -> list[int]:
    """``queue_remaining`` of every ``status`` message the socket receives within ``seconds``."""
    counts, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            message = ws.recv(timeout=max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        if isinstance(message, str) and json.loads(message)["type"] == "status":
            counts.append(json.loads(message)["data"]["status"]["exec_info"]["queue_remaining"])
    return counts


def test_status_messages_count_only_the_sockets_own_prompts(auth):
    routes = json.dumps(auth.admin.get("/api/admin/routes").json())
    if "/api/prompt" not in routes or "PrimitiveInt" not in auth.admin.get("/api/object_info").json():
        pytest.skip("needs the executor and the core nodes")
    alice, bob = auth.new_user(), auth.new_user()
    url = auth.url.replace("http://", "ws://") + "/ws?clientId="
    with connect(url + uuid.uuid4().hex, additional_headers={"X-API-Key": alice.api_key()}) as alice_ws, \
            connect(url + uuid.uuid4().hex, additional_headers={"X-API-Key": bob.api_key()}) as bob_ws:
        ids = []
        for i in range(4):
            prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 5000 + i}},
                      "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
            queued = alice.post("/api/prompt", json={"prompt": prompt})
            assert queued.status_code == 200, queued.text
            ids.append(queued.json()["prompt_id"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and ids[-1] not in alice.get(f"/api/history/{ids[-1]}").json():
            time.sleep(0.1)
        alice_counts, bob_counts = _statuses(alice_ws, 1.0), _statuses(bob_ws, 1.0)
    assert alice_counts[0] == 0 and max(alice_counts) >= 1  # the first is the greeting
    assert len(bob_counts) >= 2 and set(bob_counts) == {0}  # Bob hears every change, never Alice's count
    assert bob.get("/api/prompt").json() == {"exec_info": {"queue_remaining": 0}}


def test_folder_paths_hide_server_paths_from_users(auth):
    user = auth.new_user()
    mine = user.get("/internal/folder_paths")
    assert mine.status_code == 200
    assert "checkpoints" in mine.json() and all(v == [] for v in mine.json().values())
    admin = auth.admin.get("/internal/folder_paths").json()
    assert admin["checkpoints"] and admin["checkpoints"][0].startswith("/")
