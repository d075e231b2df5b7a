"""Secrets: CRUD, never returned, encrypted at rest, owner-only, and handed to the owner's prompts only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet

from comfy_kernel.config import default_config
from comfy_kernel.identity import Identity
from comfy_kernel.testing import run_sql, server_database
from comfy_kernel_multiuser import prompts
from comfy_kernel_multiuser.context import MultiUser
from comfy_kernel_multiuser.secrets import SecretBox
from comfy_kernel_multiuser.store import new_id, now, user_secrets
from comfy_kernel_multiuser.users import create_user
from plugins.multiuser.tests.conftest import ADMIN, AuthServer, User, database_text


def test_secret_lifecycle(auth: AuthServer):
    user = auth.new_user()
    created = user.post("/api/secrets", json={"name": "hf", "provider": "HuggingFace", "secret_value": "hf_abc123"})
    assert created.status_code == 201, created.text
    secret = created.json()
    assert secret["name"] == "hf" and secret["provider"] == "huggingface" and "hf_abc123" not in created.text
    assert set(secret) >= {"id", "name", "created_at", "updated_at"}
    listed = user.get("/api/secrets").json()["data"]
    assert [s["id"] for s in listed] == [secret["id"]] and "hf_abc123" not in user.get("/api/secrets").text
    assert user.get(f"/api/secrets/{secret['id']}").json()["name"] == "hf"
    assert user.post("/api/secrets", json={"name": "hf", "secret_value": "x"}).status_code == 409
    assert user.post("/api/secrets", json={"name": "hf2", "provider": "huggingface", "secret_value": "x"}).status_code == 409
    updated = user.patch(f"/api/secrets/{secret['id']}", json={"name": "hugging", "secret_value": "hf_new"})
    assert updated.status_code == 200 and updated.json()["name"] == "hugging" and "hf_new" not in updated.text
    assert user.delete(f"/api/secrets/{secret['id']}").status_code == 204
    assert user.get(f"/api/secrets/{secret['id']}").status_code == 404
    assert user.post("/api/secrets", json={"name": "x"}).status_code == 422
    assert user.post("/api/secrets", json={"secret_value": "x"}).status_code == 422


def test_secrets_are_encrypted_at_rest(auth: AuthServer):
    user = auth.new_user()
    value = "sk-live-" + new_id()
    assert user.post("/api/secrets", json={"name": "api", "secret_value": value}).status_code == 201
    dump = database_text(auth.server.base_dir)
    private_keys = run_sql(server_database(auth.server.base_dir), "SELECT private_key FROM mu_signing_keys")
    assert "mu_secrets" in dump and value not in dump and private_keys
    assert all(not bytes(k[0]).startswith(b"-----BEGIN") for k in private_keys)  # signing keys too


def test_secrets_belong_to_their_owner(auth: AuthServer):
    alice, bob = auth.new_user(), auth.new_user()
    secret = alice.post("/api/secrets", json={"name": "mine", "secret_value": "alice-value"}).json()
    assert bob.get("/api/secrets").json()["data"] == []
    assert bob.get(f"/api/secrets/{secret['id']}").status_code == 404
    assert bob.patch(f"/api/secrets/{secret['id']}", json={"name": "stolen"}).status_code == 404
    assert bob.delete(f"/api/secrets/{secret['id']}").status_code == 404
    assert alice.get(f"/api/secrets/{secret['id']}").json()["name"] == "mine"


def test_secrets_are_disabled_without_a_key(make_auth_server):
    server = make_auth_server(env={"COMFY_KERNEL_SECRETS_KEY": ""})
    admin = User(server, *ADMIN)
    assert admin.get("/api/secrets").status_code == 503
    assert admin.post("/api/secrets", json={"name": "a", "secret_value": "b"}).status_code == 503
    admin.close()


def test_secret_box_keys():
    box = SecretBox("a long passphrase from the config file")
    assert box.decrypt(box.encrypt(b"v")) == b"v"
    key = Fernet.generate_key()
    assert SecretBox(key.decode()).decrypt(Fernet(key).encrypt(b"x")) == b"x"  # a Fernet key is used as is
    with pytest.raises(ValueError):
        SecretBox("short")


async def test_prompts_get_only_their_owners_secret(database):
    """The hidden API-key input is filled from the caller's own comfy_org secret, nobody else's."""
    kernel = SimpleNamespace(config=default_config(auth=True, secrets_key=Fernet.generate_key().decode()),
                             database=database, state={}, route_table=None)
    mu = MultiUser(kernel)
    mu.secret_box = SecretBox(mu.settings.secrets_key)
    await mu.store.open()
    try:
        alice = await create_user(mu, "alice", "alice-password")
        bob = await create_user(mu, "bob", "bob-password")
        alice_ws = (await mu.store.user(alice))["personal_workspace_id"]
        bob_ws = (await mu.store.user(bob))["personal_workspace_id"]
        await mu.store.run(user_secrets.insert().values(
            id=new_id(), user_id=alice, workspace_id=alice_ws, name="comfy", provider="comfy_org",
            ciphertext=mu.secret_box.encrypt(b"alice-key"), created_at=now(), updated_at=now()))

        def request(user_id: str, workspace_id: str) -> SimpleNamespace:
            identity = Identity(user_id=user_id, workspace_id=workspace_id, authenticated=True)
            return SimpleNamespace(state=SimpleNamespace(identity=identity))

        body = {"prompt": {}, "client_id": "alice-socket"}
        out = prompts.on_prompt(mu, body, request(alice, alice_ws))
        assert out["extra_data"]["api_key_comfy_org"] == "alice-key" and out["client_id"] == "alice-socket"
        assert "extra_data" not in body  # the caller's body is not mutated

        theirs = prompts.on_prompt(mu, {"prompt": {}, "client_id": "bob-socket"}, request(bob, bob_ws))
        assert theirs is None or "api_key_comfy_org" not in theirs.get("extra_data", {})

        own = prompts.on_prompt(mu, {"prompt": {}, "client_id": "alice-socket",
                                     "extra_data": {"api_key_comfy_org": "typed-in"}}, request(alice, alice_ws))
        assert own is None or own["extra_data"]["api_key_comfy_org"] == "typed-in"

        # Bob naming Alice's socket gets a fresh client id instead; no id at all gets one too.
        hijack = prompts.on_prompt(mu, {"prompt": {}, "client_id": "alice-socket"}, request(bob, bob_ws))
        assert hijack["client_id"] != "alice-socket" and hijack["client_id"].startswith("unclaimed-")
        missing = prompts.on_prompt(mu, {"prompt": {}}, request(bob, bob_ws))
        assert missing["client_id"].startswith("unclaimed-")
    finally:
        await mu.store.close()
