"""Users, the first administrator, sign-in sessions, CSRF, lockout and the audit log."""

from __future__ import annotations

import httpx

from comfy_kernel.testing import ServerProcess
from plugins.multiuser.tests.conftest import ADMIN, AuthServer, User, cli, create_admin, setup_token


def test_inert_without_auth_flag(tmp_path):
    """Installed but not enabled: no routes of ours, no authentication, ComfyUI behaviour."""
    with ServerProcess(tmp_path / "base") as server:
        assert server.get("/api/object_info").status_code == 200
        assert server.get("/api/user").status_code in (404, 405)
        assert server.get("/.well-known/jwks.json").status_code == 404
        assert "auth" not in server.get("/api/features").json()


def test_cli_creates_and_lists_users(tmp_path):
    base = tmp_path / "base"
    user_id = create_admin(base, "root", "root-password")
    assert user_id.startswith("u-")
    listed = cli(base, "users", "list")
    assert listed.returncode == 0 and "root" in listed.stdout and "admin" in listed.stdout
    again = cli(base, "users", "create", "--username", "ROOT", "--password-stdin", stdin="another-pass\n")
    assert again.returncode == 1 and "taken" in again.stderr
    short = cli(base, "users", "create", "--username", "bob", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "password" in short.stderr


def test_setup_link_creates_first_admin_once(make_auth_server):
    server = make_auth_server(admin=False)
    token = setup_token(server.log())
    page = server.get("/auth/setup")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    bad = server.post("/api/auth/setup", json={"token": "wrong", "username": "boss", "password": "boss-password"})
    assert bad.status_code == 403
    r = server.post("/api/auth/setup", json={"token": token, "username": "boss", "password": "boss-password"})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    again = server.post("/api/auth/setup", json={"token": token, "username": "boss2", "password": "boss-password"})
    assert again.status_code == 403
    boss = User(server, "boss", "boss-password")
    assert boss.get("/api/user").json()["is_admin"] is True


def test_sign_in_sets_a_hardened_cookie(auth: AuthServer):
    client = auth.anonymous()
    r = client.post("/api/auth/session", json={"username": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["expiresIn"] > 0 and body["csrf_token"]
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("session=") and "httponly" in cookie and "samesite=lax" in cookie
    assert "path=/" in cookie and "secure" not in cookie  # plain http here; Secure over TLS
    assert r.headers["cache-control"] == "no-store"
    me = client.get("/api/user")
    assert me.status_code == 200 and me.json()["id"] and me.json()["status"] == "active"
    users = client.get("/api/users").json()
    assert users == {"storage": "server", "migrated": True}
    client.close()


def test_wrong_credentials_are_refused_alike(auth: AuthServer):
    client = auth.anonymous()
    wrong = client.post("/api/auth/session", json={"username": ADMIN[0], "password": "nope-nope"})
    unknown = client.post("/api/auth/session", json={"username": "ghost", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers
    assert client.post("/api/auth/session", json={}).status_code == 401
    client.close()


def test_sign_out_revokes_the_session(auth: AuthServer):
    user = auth.new_user()
    old_cookie = user.client.cookies.get("session")
    r = user.delete("/api/auth/session")
    assert r.status_code == 200 and r.json() == {"success": True}
    assert "max-age=0" in r.headers["set-cookie"].lower()
    replay = httpx.Client(base_url=auth.url, cookies={"session": old_cookie})
    assert replay.get("/api/user").status_code == 401
    replay.close()


def test_csrf_protects_cookie_authenticated_changes(auth: AuthServer):
    user = auth.new_user()
    bare = httpx.Client(base_url=auth.url, cookies={"session": user.client.cookies.get("session")})
    assert bare.get("/api/user").status_code == 200  # reads need no token
    refused = bare.post("/api/workspace/api-keys", json={"name": "x"})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
    wrong = bare.post("/api/workspace/api-keys", json={"name": "x"}, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    with_token = bare.post("/api/workspace/api-keys", json={"name": "x"}, headers={"X-CSRF-Token": user.csrf})
    assert with_token.status_code == 201
    same_origin = bare.post("/api/workspace/api-keys", json={"name": "y"}, headers={"Origin": auth.url})
    assert same_origin.status_code == 201
    fetch_meta = bare.post("/api/workspace/api-keys", json={"name": "z"}, headers={"Sec-Fetch-Site": "same-origin"})
    assert fetch_meta.status_code == 201
    cross = bare.post("/api/workspace/api-keys", json={"name": "w"},
                      headers={"Origin": "http://evil.example", "X-CSRF-Token": user.csrf})
    assert cross.status_code == 403
    bare.close()


def test_cookie_is_ignored_cross_origin_even_with_cors(make_auth_server):
    server = make_auth_server("--enable-cors-header", "*")
    admin = User(server, *ADMIN)
    cookie = admin.client.cookies.get("session")
    evil = httpx.Client(base_url=server.url, cookies={"session": cookie}, headers={"Origin": "http://evil.example"})
    assert evil.get("/api/user").status_code == 401
    evil.close()
    admin.close()


def test_admin_manages_users(auth: AuthServer):
    user = auth.new_user()
    assert user.post("/api/users", json={"username": "sneaky", "password": "sneaky-password"}).status_code == 403
    assert user.get("/api/admin/users").status_code == 403
    listed = auth.admin.get("/api/admin/users").json()["users"]
    assert user.id in {u["id"] for u in listed}
    dup = auth.admin.post("/api/users", json={"username": user.username.upper(), "password": "long-enough"})
    assert dup.status_code == 400
    r = auth.admin.patch(f"/api/admin/users/{user.id}", json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert user.get("/api/user").status_code == 401  # sessions of a disabled user end
    again = httpx.Client(base_url=auth.url)
    assert again.post("/api/auth/session", json={"username": user.username, "password": user.password}).status_code == 401
    auth.admin.patch(f"/api/admin/users/{user.id}", json={"disabled": False})
    promoted = auth.admin.patch(f"/api/admin/users/{user.id}", json={"is_admin": True})
    assert promoted.json()["is_admin"] is True
    events = auth.admin.get("/api/admin/audit", params={"event": "role.change"}).json()["events"]
    assert any(e["user_id"] == user.id for e in events)
    again.close()


def test_password_change_ends_other_sessions(auth: AuthServer):
    user = auth.new_user()
    other = User(auth.server, user.username, user.password)
    wrong = user.post("/api/user/password", json={"current_password": "bad", "new_password": "new-password-1"})
    assert wrong.status_code == 403
    r = user.post("/api/user/password", json={"current_password": user.password, "new_password": "new-password-1"})
    assert r.status_code == 200
    assert user.get("/api/user").status_code == 200
    assert other.get("/api/user").status_code == 401
    User(auth.server, user.username, "new-password-1").close()
    other.close()


def test_lockout_after_repeated_failures(make_auth_server):
    server = make_auth_server("--auth-max-failures", "3", "--auth-lockout", "60")
    client = httpx.Client(base_url=server.url)
    for _ in range(3):
        assert client.post("/api/auth/session", json={"username": "admin", "password": "wrong-pass"}).status_code == 401
    locked = client.post("/api/auth/session", json={"username": ADMIN[0], "password": ADMIN[1]})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    # Another account from the same address is not locked by these failures.
    other = cli(server.base_dir, "users", "create", "--username", "carol", "--password-stdin", stdin="carol-password\n")
    assert other.returncode == 0
    assert client.post("/api/auth/session", json={"username": "carol", "password": "carol-password"}).status_code == 200
    client.close()


def test_sign_in_rate_limit(make_auth_server):
    server = make_auth_server("--auth-rate-limit", "4")
    client = httpx.Client(base_url=server.url)
    codes = [client.post("/api/auth/session", json={"username": "x", "password": "y-y-y-y-y"}).status_code
             for _ in range(6)]
    assert codes[:4] == [401] * 4 and codes[4:] == [429, 429]
    client.close()


def test_failed_sign_ins_are_audited(auth: AuthServer):
    client = auth.anonymous()
    client.post("/api/auth/session", json={"username": "mallory", "password": "guess-guess"})
    events = auth.admin.get("/api/admin/audit", params={"event": "signin"}).json()["events"]
    assert any(e["outcome"] == "failure" and e["detail"].get("username") == "mallory" for e in events)
    assert any(e["outcome"] == "success" for e in events)
    assert all("guess-guess" not in str(e) and ADMIN[1] not in str(e) for e in events)
    client.close()


def test_cookie_is_secure_over_tls(tmp_path):
    """Served over HTTPS, the session cookie carries Secure."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from .conftest import SECRETS_KEY

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    base = tmp_path / "tls"
    create_admin(base)
    key_file, cert_file = base / "key.pem", base / "cert.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server = ServerProcess(base, "--auth", "--tls-keyfile", str(key_file), "--tls-certfile", str(cert_file),
                           env={"COMFY_KERNEL_SECRETS_KEY": SECRETS_KEY})
    server.client.close()
    server.url = server.url.replace("http://", "https://")
    server.client = httpx.Client(base_url=server.url, verify=False, timeout=60.0)
    with server:
        r = server.post("/api/auth/session", json={"username": ADMIN[0], "password": ADMIN[1]})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie
        assert server.get("/api/user").status_code == 200
