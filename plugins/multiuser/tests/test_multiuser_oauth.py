"""OAuth 2.1: metadata, dynamic registration policy, authorize/consent, PKCE, refresh rotation and reuse."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt

from plugins.multiuser.tests.conftest import AuthServer, User

REDIRECT = "http://127.0.0.1:33418/callback"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _register(auth: AuthServer, **meta) -> httpx.Response:
    return auth.anonymous().post("/oauth/register", json={"redirect_uris": [REDIRECT], "client_name": "Tool", **meta})


def _client(auth: AuthServer) -> str:
    r = _register(auth)
    assert r.status_code == 201, r.text
    return r.json()["client_id"]


def _authorize_params(client_id: str, challenge: str, **extra) -> dict:
    return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "read write",
            "state": "st4te", "code_challenge": challenge, "code_challenge_method": "S256", **extra}


def _challenge(user: User, client_id: str, challenge: str, **extra) -> dict:
    r = user.get("/oauth/authorize", params=_authorize_params(client_id, challenge, **extra),
                 headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


def _code(user: User, client_id: str, challenge: str, workspace_id: str | None = None, **extra) -> str:
    consent = _challenge(user, client_id, challenge, **extra)
    r = user.post("/oauth/authorize", json={"oauth_request_id": consent["oauth_request_id"],
                                            "csrf_token": consent["csrf_token"], "decision": "allow",
                                            "workspace_id": workspace_id or user.workspace_id})
    assert r.status_code == 200, r.text
    query = parse_qs(urlsplit(r.json()["redirect_url"]).query)
    assert query["state"] == ["st4te"]
    return query["code"][0]


def _token(auth: AuthServer, **form) -> httpx.Response:
    return auth.anonymous().post("/oauth/token", data=form)


def _exchange(auth: AuthServer, client_id: str, code: str, verifier: str) -> httpx.Response:
    return _token(auth, grant_type="authorization_code", client_id=client_id, code=code, code_verifier=verifier,
                  redirect_uri=REDIRECT)


def test_metadata(auth: AuthServer):
    anonymous = auth.anonymous()
    server = anonymous.get("/.well-known/oauth-authorization-server")
    assert server.status_code == 200 and server.headers["cache-control"] == "public, max-age=300"
    meta = server.json()
    assert meta["issuer"] == auth.url and meta["token_endpoint"] == auth.url + "/oauth/token"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint_auth_methods_supported"] == ["none"]
    assert meta["registration_endpoint"] == auth.url + "/oauth/register"
    resource = anonymous.get("/.well-known/oauth-protected-resource").json()
    assert resource["resource"] == auth.url and resource["authorization_servers"] == [auth.url]
    assert set(resource["scopes_supported"]) == {"read", "write"}


def test_registration_policy(auth: AuthServer):
    ok = _register(auth)
    assert ok.status_code == 201 and ok.headers["cache-control"] == "no-store" and ok.headers["pragma"] == "no-cache"
    body = ok.json()
    assert body["client_id"].startswith("comfy-dyn-") and body["token_endpoint_auth_method"] == "none"
    assert body["application_type"] == "native" and body["grant_types"] == ["authorization_code", "refresh_token"]
    assert _register(auth, redirect_uris=["com.example.tool:/callback"]).status_code == 201
    assert _register(auth, redirect_uris=["http://[::1]:9/cb", "http://localhost/cb"]).status_code == 201
    refused = {
        "scope": ({"scope": "read"}, "invalid_client_metadata"),
        "grants": ({"resource_grants": {"x": ["read"]}}, "invalid_client_metadata"),
        "logo": ({"logo_uri": "https://x"}, "invalid_client_metadata"),
        "unknown key": ({"color": "red"}, "invalid_client_metadata"),
        "type": ({"application_type": "desktop"}, "invalid_client_metadata"),
        "secret auth": ({"token_endpoint_auth_method": "client_secret_basic"}, "invalid_client_metadata"),
        "reserved": ({"client_name": "Claude Desktop"}, "invalid_client_metadata"),
        "reserved folded": ({"client_name": "ＣＵＲＳＯＲ"}, "invalid_client_metadata"),
        "remote http": ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        "plain scheme": ({"redirect_uris": ["myapp:/cb"]}, "invalid_redirect_uri"),
        "fragment": ({"redirect_uris": [REDIRECT + "#x"]}, "invalid_redirect_uri"),
        "too many": ({"redirect_uris": [REDIRECT] * 6}, "invalid_redirect_uri"),
        "none": ({"redirect_uris": []}, "invalid_redirect_uri"),
        "web unlisted": ({"application_type": "web", "redirect_uris": ["https://app.example/cb"]},
                         "invalid_redirect_uri"),
        "web loopback": ({"application_type": "web"}, "invalid_redirect_uri"),
    }
    for name, (meta, error) in refused.items():
        r = _register(auth, **meta)
        assert r.status_code == 400 and r.json()["error"] == error, (name, r.text)
        assert r.headers["cache-control"] == "no-store"


def test_web_clients_use_listed_https_hosts(make_auth_server):
    server = make_auth_server("--auth-dcr-https-hosts", "app.example")
    client = httpx.Client(base_url=server.url)
    good = client.post("/oauth/register", json={"application_type": "web", "redirect_uris": ["https://app.example/cb"]})
    assert good.status_code == 201 and good.json()["application_type"] == "web"
    bad = client.post("/oauth/register", json={"application_type": "web", "redirect_uris": ["http://app.example/cb"]})
    assert bad.status_code == 400
    client.close()


def test_authorize_validation(auth: AuthServer):
    user = auth.new_user()
    client_id = _client(auth)
    _, challenge = _pkce()
    params = _authorize_params(client_id, challenge)
    for broken in ({"client_id": "comfy-dyn-unknown"}, {"redirect_uri": "http://127.0.0.1:1/other"},
                   {"state": ""}):
        r = user.get("/oauth/authorize", params={**params, **broken}, follow_redirects=False)
        assert r.status_code == 400, broken
    for broken, error in (({"code_challenge_method": "plain"}, "invalid_request"),
                          ({"code_challenge": ""}, "invalid_request"),
                          ({"response_type": "token"}, "unsupported_response_type"),
                          ({"scope": "admin"}, "invalid_scope"),
                          ({"resource": "https://elsewhere.example"}, "invalid_target")):
        r = user.get("/oauth/authorize", params={**params, **broken}, follow_redirects=False)
        assert r.status_code == 302, broken
        query = parse_qs(urlsplit(r.headers["location"]).query)
        assert query["error"] == [error] and query["state"] == ["st4te"]
    # Signed out: to the sign-in page, carrying only the opaque request id.
    r = auth.anonymous().get("/oauth/authorize", params=params, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("/auth/login?next=")
    assert challenge not in r.headers["location"]
    # A browser with a session goes to the consent page.
    r = user.get("/oauth/authorize", params=params, headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("/auth/consent?oauth_request_id=")
    assert user.get(r.headers["location"]).status_code == 200


def test_consent_is_single_use_and_csrf_bound(auth: AuthServer):
    user, other = auth.new_user(), auth.new_user()
    client_id = _client(auth)
    _, challenge = _pkce()
    consent = _challenge(user, client_id, challenge)
    assert consent["client_display_name"] == "Tool" and consent["scopes"] == ["read", "write"]
    assert [w["id"] for w in consent["workspaces"]] == [user.workspace_id]
    base = {"oauth_request_id": consent["oauth_request_id"], "workspace_id": user.workspace_id}
    assert user.post("/oauth/authorize", json={**base, "csrf_token": "forged", "decision": "allow"}).status_code == 400
    assert user.post("/oauth/authorize", json={**base, "csrf_token": consent["csrf_token"], "decision": "allow",
                                               "workspace_id": other.workspace_id}).status_code == 400
    key_client = httpx.Client(base_url=auth.url, headers={"X-API-Key": user.api_key()})
    assert key_client.post("/oauth/authorize", json={**base, "csrf_token": consent["csrf_token"],
                                                     "decision": "allow"}).status_code == 401
    key_client.close()
    denied = user.post("/oauth/authorize", json={**base, "csrf_token": consent["csrf_token"], "decision": "deny"})
    assert denied.status_code == 200
    query = parse_qs(urlsplit(denied.json()["redirect_url"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st4te"]
    again = user.post("/oauth/authorize", json={**base, "csrf_token": consent["csrf_token"], "decision": "allow"})
    assert again.status_code == 400
    assert user.get("/oauth/authorize", params={"oauth_request_id": consent["oauth_request_id"]}).status_code == 400


def test_code_flow_with_pkce(auth: AuthServer):
    user = auth.new_user()
    client_id = _client(auth)
    verifier, challenge = _pkce()
    code = _code(user, client_id, challenge)
    assert _exchange(auth, client_id, code, "x" * 43).status_code == 400  # wrong verifier...
    code = _code(user, client_id, challenge)
    wrong_redirect = _token(auth, grant_type="authorization_code", client_id=client_id, code=code,
                            code_verifier=verifier, redirect_uri="http://127.0.0.1:1/other")
    assert wrong_redirect.status_code == 400 and wrong_redirect.json()["error"] == "invalid_grant"
    code = _code(user, client_id, challenge)
    r = _exchange(auth, client_id, code, verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
    tokens = r.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "read write" and tokens["expires_in"] > 0
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["aud"] == auth.url and claims["client_id"] == client_id and claims["ws"] == user.workspace_id
    api = httpx.Client(base_url=auth.url, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    me = api.get("/api/user").json()
    assert me["id"] == user.id and me["auth_method"] == "jwt"
    # Replaying the code fails and revokes what the first exchange produced.
    replay = _exchange(auth, client_id, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert replay.headers["cache-control"] == "no-store"
    assert api.get("/api/user").status_code == 401
    refreshed = _token(auth, grant_type="refresh_token", client_id=client_id, refresh_token=tokens["refresh_token"])
    assert refreshed.status_code == 400
    assert _token(auth, grant_type="authorization_code", client_id=client_id, code=code, code_verifier=verifier,
                  redirect_uri=REDIRECT, client_secret="s").status_code == 401
    assert _token(auth, grant_type="password", client_id=client_id).json()["error"] == "unsupported_grant_type"
    api.close()


def test_refresh_rotation_and_reuse_detection(auth: AuthServer):
    user = auth.new_user()
    client_id = _client(auth)
    verifier, challenge = _pkce()
    first = _exchange(auth, client_id, _code(user, client_id, challenge), verifier).json()
    second = _token(auth, grant_type="refresh_token", client_id=client_id, refresh_token=first["refresh_token"])
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    api = httpx.Client(base_url=auth.url, headers={"Authorization": f"Bearer {second['access_token']}"})
    assert api.get("/api/user").status_code == 200
    # The rotated token comes back: the whole family dies, including the newest tokens.
    reuse = _token(auth, grant_type="refresh_token", client_id=client_id, refresh_token=first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert _token(auth, grant_type="refresh_token", client_id=client_id,
                  refresh_token=second["refresh_token"]).status_code == 400
    assert api.get("/api/user").status_code == 401
    events = auth.admin.get("/api/admin/audit", params={"event": "oauth.refresh_reuse"}).json()["events"]
    assert any(e["user_id"] == user.id for e in events)
    api.close()


def test_read_scope_is_read_only_and_never_admin(auth: AuthServer):
    client_id = _client(auth)
    verifier, challenge = _pkce()
    code = _code(auth.admin, client_id, challenge, scope="read")
    tokens = _exchange(auth, client_id, code, verifier).json()
    assert tokens["scope"] == "read"
    api = httpx.Client(base_url=auth.url, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert api.get("/api/workspaces").status_code == 200
    refused = api.post("/api/workspaces", json={"name": "nope"})
    assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
    assert api.get("/api/admin/users").status_code == 403  # the admin's OAuth token is not an admin token
    widened = _token(auth, grant_type="refresh_token", client_id=client_id, refresh_token=tokens["refresh_token"],
                     scope="read write")
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"
    api.close()
