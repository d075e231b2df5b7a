"""JWT access tokens: JWKS, expiry, key rotation, tampering, and the external token exchange."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from plugins.multiuser.tests.conftest import ADMIN, AuthServer, User

ISSUER = "https://issuer.test"
AUDIENCE = "comfy-test"


def _bearer(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})


def _token(user: User, **body) -> dict:
    r = user.post("/api/auth/token", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_session_exchanges_for_a_workspace_jwt(auth: AuthServer):
    user = auth.new_user()
    issued = _token(user)
    assert issued["role"] == "owner" and issued["workspace"]["id"] == user.workspace_id
    assert issued["workspace"]["type"] == "personal" and "jobs:run" in issued["permissions"]
    header = jwt.get_unverified_header(issued["token"])
    assert header["alg"] == "ES256" and header["kid"]
    client = _bearer(auth.url, issued["token"])
    me = client.get("/api/user").json()
    assert me["id"] == user.id and me["auth_method"] == "jwt" and me["workspace_id"] == user.workspace_id
    # The token verifies against the published key set.
    jwks = auth.anonymous().get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and "max-age" in jwks.headers["cache-control"]
    key = next(k for k in jwks.json()["keys"] if k["kid"] == header["kid"])
    assert key["kty"] == "EC" and key["crv"] == "P-256" and "d" not in key
    claims = jwt.decode(issued["token"], jwt.PyJWK.from_dict(key).key, algorithms=["ES256"],
                        audience="comfy-kernel")
    assert claims["sub"] == user.id and claims["ws"] == user.workspace_id
    client.close()


def test_jwt_for_a_foreign_workspace_is_refused(auth: AuthServer):
    alice, bob = auth.new_user(), auth.new_user()
    assert bob.post("/api/auth/token", json={"workspace_id": alice.workspace_id}).status_code == 404
    assert auth.anonymous().post("/api/auth/token").status_code == 401


def test_tampered_and_forged_tokens_are_refused(auth: AuthServer):
    user, other = auth.new_user(), auth.new_user()
    token = _token(user)["token"]
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = other.id
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad in (f"{head}.{forged_payload}.{sig}",
                jwt.encode(claims, "", algorithm="none"),
                jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                           headers={"kid": jwt.get_unverified_header(token)["kid"]}),
                "not-a-jwt"):
        client = _bearer(auth.url, bad)
        r = client.get("/api/user")
        assert r.status_code == 401, bad
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        client.close()


def test_a_jwt_cannot_mint_a_jwt(auth: AuthServer):
    user = auth.new_user()
    client = _bearer(auth.url, _token(user)["token"])
    # The Bearer on /api/auth/token is read as an external identity token (none is configured here).
    assert client.post("/api/auth/token").status_code == 401
    client.close()


def test_tokens_expire(make_auth_server):
    server = make_auth_server("--auth-token-ttl", "2")
    admin = User(server, *ADMIN)
    client = _bearer(server.url, _token(admin)["token"])
    assert client.get("/api/user").status_code == 200
    time.sleep(3.2)
    assert client.get("/api/user").status_code == 401
    client.close()
    admin.close()


def test_key_rotation_keeps_valid_tokens(auth: AuthServer):
    user = auth.new_user()
    before = _token(user)["token"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    rotated = auth.admin.post("/api/admin/signing-keys/rotate")
    assert rotated.status_code == 200 and rotated.json()["kid"] != old_kid
    after = _token(user)["token"]
    assert jwt.get_unverified_header(after)["kid"] == rotated.json()["kid"]
    kids = {k["kid"] for k in auth.anonymous().get("/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, rotated.json()["kid"]} <= kids
    for token in (before, after):
        client = _bearer(auth.url, token)
        assert client.get("/api/user").status_code == 200
        client.close()


def test_removed_member_loses_team_tokens(auth: AuthServer):
    owner, member = auth.new_user(), auth.new_user()
    team = owner.post("/api/workspaces", json={"name": "T"}).json()
    invite = owner.post("/api/workspace/invites", json={"username": member.username},
                        headers={"Comfy-Workspace": team["id"]}).json()
    member.post(f"/api/invites/{invite['token']}/accept")
    issued = _token(member, workspace_id=team["id"])
    assert issued["role"] == "member"
    client = _bearer(auth.url, issued["token"])
    assert client.get("/api/user").json()["workspace_id"] == team["id"]
    owner.delete(f"/api/workspace/members/{member.id}", headers={"Comfy-Workspace": team["id"]})
    assert client.get("/api/user").status_code == 401
    client.close()


# --- external issuer ----------------------------------------------------------------------------


@pytest.fixture
def issuer(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="ext-1", use="sig", alg="ES256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))

    def sign(sub: str = "ext-user-1", *, aud: str = AUDIENCE, iss: str = ISSUER, exp: int = 300,
             **extra) -> str:
        now = int(time.time())
        claims = {"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + exp, **extra}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "ext-1"})

    sign.jwks_path = str(path)  # type: ignore[attr-defined]
    return sign


def test_external_identity_token_exchange(make_auth_server, issuer):
    server = make_auth_server("--auth-external-issuer", ISSUER, "--auth-external-jwks", issuer.jwks_path,
                              "--auth-external-audience", AUDIENCE)
    anonymous = httpx.Client(base_url=server.url)
    good = issuer(email="ext@example.com", email_verified=True, preferred_username="ext")
    r = anonymous.post("/api/auth/token", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200, r.text
    issued = r.json()
    assert issued["workspace"]["type"] == "personal" and issued["role"] == "owner"
    client = _bearer(server.url, issued["token"])
    me = client.get("/api/user").json()
    assert me["username"] == "ext" and me["email"] == "ext@example.com"
    again = anonymous.post("/api/auth/token", headers={"Authorization": f"Bearer {issuer()}"}).json()
    assert jwt.decode(again["token"], options={"verify_signature": False})["sub"] == me["id"]
    for bad in (issuer(aud="someone-else"), issuer(iss="https://evil.test"), issuer(exp=-120), good + "x",
                jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": int(time.time()),
                            "exp": int(time.time()) + 60}, ec.generate_private_key(ec.SECP256R1()),
                           algorithm="ES256", headers={"kid": "ext-1"})):
        refused = anonymous.post("/api/auth/token", headers={"Authorization": f"Bearer {bad}"})
        assert refused.status_code == 401, refused.text
    # The external token itself is not a credential for the API.
    assert _bearer(server.url, good).get("/api/user").status_code == 401
    other = anonymous.post("/api/auth/token", headers={"Authorization": f"Bearer {issuer(sub=str(uuid.uuid4()))}"})
    assert jwt.decode(other.json()["token"], options={"verify_signature": False})["sub"] != me["id"]
    client.close()
    anonymous.close()


def test_restart_without_the_secrets_key_still_signs(make_auth_server, tmp_path):
    base = tmp_path / "restart"
    server = make_auth_server(base=base)
    admin = User(server, *ADMIN)
    before = _token(admin)["token"]
    admin.close()
    server.stop()
    from comfy_kernel.testing import ServerProcess

    with ServerProcess(base, "--auth", env={"COMFY_KERNEL_SECRETS_KEY": ""}) as again:
        admin = User(again, *ADMIN)
        after = _token(admin)["token"]
        assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
        for token in (before, after):
            client = _bearer(again.url, token)
            assert client.get("/api/user").status_code == 200
            client.close()
        admin.close()
