"""Tokens: API keys, our own JWT access tokens with rotating keys, and the external token exchange.

* **API keys** (``comfyui-`` + 256 random bits) are shown once; the database
  keeps their SHA-256, an 8-character display prefix, the workspace and user
  they act for, expiry, last use and revocation. Sent as ``X-API-Key``.
* **JWT access tokens** are ES256-signed, short-lived (``--auth-token-ttl``)
  and carry the user (``sub``), the workspace (``ws``), the role and scopes.
  Signing keys rotate every ``--auth-key-rotation`` seconds; a retired key
  stays in ``/.well-known/jwks.json`` until every token it signed has expired,
  so rotation never breaks a valid token.
* **``POST /api/auth/token``** turns an identity token of a configured
  external issuer (verified against its JWKS) — or the caller's session or API
  key — into one of our JWTs for a chosen workspace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import bindparam, case, func, select, update
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from comfy_kernel.identity import Identity
from comfy_kernel.routing import RouteTable

from .context import (
    FULL_SCOPES,
    MultiUser,
    auth_method,
    client_address,
    fail,
    identity_of,
    json_body,
    ok,
    require_identity,
    same,
    text_field,
    throttle,
)
from .store import (
    Params,
    api_keys,
    digest,
    external_identities,
    hot,
    iso,
    new_id,
    new_token,
    now,
    parse_iso,
    refresh_tokens,
    signing_keys,
    users,
    workspaces,
)

log = logging.getLogger(__name__)

API_KEY_PREFIX = "comfyui-"
API_AUDIENCE = "comfy-kernel"
ALGORITHM = "ES256"
EXTERNAL_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
MAX_KEYS_PER_USER = 50
LAST_USED_EVERY = 60.0
ROLE_PERMISSIONS = {
    "owner": ["workspace:read", "workspace:update", "workspace:delete", "members:read", "members:manage",
              "invites:manage", "api_keys:create", "api_keys:manage_all", "jobs:run"],
    "member": ["workspace:read", "members:read", "api_keys:create", "api_keys:manage_own", "jobs:run"],
}

K, S = api_keys.c, signing_keys.c
_API_KEY = hot(select(api_keys, users.c.is_admin, users.c.disabled, users.c.username)
               .select_from(api_keys.join(users, users.c.id == K.user_id)).where(K.key_hash == bindparam("hash")))
_TOUCH_KEY = hot(update(api_keys).where(K.id == bindparam("id")).values(last_used_at=bindparam("at")))
_PUBLIC_KEY = hot(select(S.public_jwk, S.verify_until).where(S.kid == bindparam("kid")))
_FAMILY_REVOKED = hot(select(refresh_tokens.c.token_hash).where(
    refresh_tokens.c.family_id == bindparam("family"), refresh_tokens.c.revoked_at.is_not(None)).limit(1))


# --- API keys ------------------------------------------------------------------------------


def new_api_key() -> tuple[str, str]:
    """A fresh key and its display prefix (the first 8 characters after ``comfyui-``)."""
    key = API_KEY_PREFIX + new_token(32)
    return key, key[len(API_KEY_PREFIX):len(API_KEY_PREFIX) + 8]


def key_json(row: Any) -> dict[str, Any]:
    out = {"id": row["id"], "workspace_id": row["workspace_id"], "user_id": row["user_id"],
           "name": row["name"], "description": row["description"], "key_prefix": row["key_prefix"],
           "created_at": iso(row["created_at"])}
    for name in ("expires_at", "last_used_at", "revoked_at"):
        if row[name] is not None:
            out[name] = iso(row[name])
    return out


def verify_api_key(mu: MultiUser, key: str) -> Identity | None:
    """The identity an API key acts as, or None (unknown, revoked, expired, user disabled or removed)."""
    if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        return None
    hashed = digest(key)
    row = mu.store.read_one(_API_KEY, {"hash": hashed})
    if row is None or not same(row["key_hash"], hashed):
        return None
    t = now()
    if row["revoked_at"] is not None or (row["expires_at"] is not None and row["expires_at"] <= t) \
            or row["disabled"]:
        return None
    role = mu.store.membership_sync(row["workspace_id"], row["user_id"])
    if role is None:
        return None
    if row["last_used_at"] is None or t - row["last_used_at"] > LAST_USED_EVERY:
        _touch_later(mu, _TOUCH_KEY, {"id": row["id"], "at": t})
    return Identity(user_id=row["user_id"], workspace_id=row["workspace_id"], authenticated=True,
                    is_admin=bool(row["is_admin"]), scopes=FULL_SCOPES,
                    extra={"method": "api_key", "role": role, "api_key_id": row["id"],
                           "username": row["username"]})


def _touch_later(mu: MultiUser, stmt: Any, params: Params = None) -> None:
    """Record last use without delaying the request (the hook is synchronous)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(mu.store.run(stmt, params))
    task.add_done_callback(lambda t: t.exception() and log.debug("last-use update failed: %s", t.exception()))


# --- signing keys -----------------------------------------------------------------------------


class SigningKeys:
    """ES256 keys in ``mu_signing_keys``: one signs, older ones only verify until their tokens expire."""

    def __init__(self, mu: MultiUser):
        self.mu = mu
        self._public: dict[str, tuple[Any, float]] = {}
        self._signing: tuple[str, Any, float] | None = None

    @property
    def max_token_lifetime(self) -> int:
        return max(self.mu.settings.token_ttl, 60)

    def _encrypt(self, pem: bytes) -> bytes:
        box = self.mu.secret_box
        return box.encrypt(pem) if box is not None else pem

    def _decrypt(self, blob: bytes) -> bytes:
        if blob.startswith(b"-----BEGIN"):
            return blob
        box = self.mu.secret_box
        if box is None:
            raise RuntimeError("signing keys are encrypted but no secrets key is configured")
        return box.decrypt(blob)

    async def load(self) -> None:
        rows = await self.mu.store.all(select(signing_keys).where(S.verify_until > now()))
        for row in rows:
            self._remember(row["kid"], row["public_jwk"], row["verify_until"])
        await self.signing_key()

    def _remember(self, kid: str, public_jwk: str, verify_until: float) -> None:
        key = jwt.PyJWK.from_dict(json.loads(public_jwk)).key
        self._public[kid] = (key, verify_until)

    async def signing_key(self) -> tuple[str, Any]:
        """The key that signs now, creating one when none is within its signing period."""
        t = now()
        if self._signing is not None and self._signing[2] > t:
            return self._signing[0], self._signing[1]
        async with self.mu.store.write_lock:
            row = await self.mu.store.one(select(signing_keys).where(S.sign_until > t)
                                          .order_by(S.created_at.desc()).limit(1))
            if row is None:
                return await self._create()
            try:
                private = serialization.load_pem_private_key(self._decrypt(row["private_key"]), password=None)
            except Exception:
                # Encrypted under a secrets key this server no longer has: sign with a new key.
                log.warning("multiuser: the current signing key cannot be decrypted; creating a new one")
                return await self._create()
            self._signing = (row["kid"], private, row["sign_until"])
            self._remember(row["kid"], row["public_jwk"], row["verify_until"])
            return row["kid"], private

    async def _create(self) -> tuple[str, Any]:
        t = now()
        private = ec.generate_private_key(ec.SECP256R1())
        kid = new_id("k-")
        public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        public_jwk.update(kid=kid, use="sig", alg=ALGORITHM)
        sign_until = t + max(self.mu.settings.key_rotation, 60)
        verify_until = sign_until + self.max_token_lifetime + 60
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        await self.mu.store.run(signing_keys.insert().values(
            kid=kid, private_key=self._encrypt(pem), public_jwk=json.dumps(public_jwk), created_at=t,
            sign_until=sign_until, verify_until=verify_until))
        self._signing = (kid, private, sign_until)
        self._remember(kid, json.dumps(public_jwk), verify_until)
        await self.mu.audit.record("signing_key.create", kid=kid)
        return kid, private

    async def rotate(self) -> str:
        """Start signing with a new key now; the old ones keep verifying until their tokens expire."""
        t = now()
        async with self.mu.store.write_lock:
            cap = t + self.max_token_lifetime + 60
            await self.mu.store.run(update(signing_keys).where(S.sign_until > t).values(
                sign_until=t, verify_until=case((S.verify_until < cap, S.verify_until), else_=cap)))
            self._signing = None
            kid, _ = await self._create()
        return kid

    def public_key(self, kid: str) -> Any | None:
        """Verification key by ``kid`` (synchronous: used by the identity hook)."""
        entry = self._public.get(kid)
        if entry is None:
            row = self.mu.store.read_one(_PUBLIC_KEY, {"kid": kid})
            if row is None:
                return None
            self._remember(kid, row["public_jwk"], row["verify_until"])
            entry = self._public[kid]
        key, verify_until = entry
        return key if verify_until > now() else None

    async def jwks(self) -> dict[str, Any]:
        rows = await self.mu.store.all(select(S.public_jwk).where(S.verify_until > now())
                                       .order_by(S.created_at.desc()))
        return {"keys": [json.loads(r["public_jwk"]) for r in rows]}

    async def mint(self, *, user_id: str, workspace_id: str, role: str, scopes: frozenset[str] | set[str],
                   audience: str = API_AUDIENCE, ttl: int | None = None, extra: dict[str, Any] | None = None,
                   ) -> tuple[str, float]:
        kid, private = await self.signing_key()
        t = int(time.time())
        exp = t + int(ttl or self.mu.settings.token_ttl)
        claims = {"iss": self.mu.issuer(), "sub": user_id, "aud": audience, "iat": t, "nbf": t, "exp": exp,
                  "jti": new_token(16), "ws": workspace_id, "role": role, "scope": " ".join(sorted(scopes))}
        claims.update(extra or {})
        token = jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": kid, "typ": "at+jwt"})
        return token, float(exp)


def verify_access_token(mu: MultiUser, token: str, request: HTTPConnection) -> Identity | None:
    """Our JWT to an identity, or None when it is not valid now (synchronous: identity hook)."""
    keys = mu.keys
    if keys is None:
        return None
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
        return None
    key = keys.public_key(header["kid"])
    if key is None:
        return None
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=[API_AUDIENCE, mu.base_url(request)],
                            issuer=mu.issuer(), leeway=0,
                            options={"require": ["exp", "iat", "sub", "aud", "iss"]})
    except jwt.PyJWTError:
        return None
    user = mu.store.user_sync(str(claims["sub"]))
    if user is None or user["disabled"]:
        return None
    workspace_id = str(claims.get("ws") or "")
    role = mu.store.membership_sync(workspace_id, user["id"])
    if role is None:
        return None
    family = claims.get("fam")
    if family:
        if mu.store.reads.fetch_one(_FAMILY_REVOKED, {"family": family}) is not None:
            return None
    scopes = frozenset(str(claims.get("scope", "")).split()) & FULL_SCOPES
    oauth = bool(claims.get("client_id"))
    return Identity(user_id=user["id"], workspace_id=workspace_id, authenticated=True,
                    is_admin=bool(user["is_admin"]) and not oauth, scopes=scopes,
                    extra={"method": "jwt", "role": role, "username": user["username"],
                           "client_id": claims.get("client_id"), "jti": claims.get("jti")})


# --- external identity tokens ---------------------------------------------------------------------


class ExternalIssuer:
    """Verifies identity tokens of one configured issuer against its JWKS (URL or file)."""

    def __init__(self, issuer: str, jwks: str, audience: str | None):
        self.issuer = issuer
        self.source = jwks
        self.audience = audience
        self._client: jwt.PyJWKClient | None = None
        if jwks.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=300, timeout=10)

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        with open(self.source, encoding="utf-8") as f:
            keyset = jwt.PyJWKSet.from_dict(json.load(f))
        kid = jwt.get_unverified_header(token).get("kid")
        for key in keyset.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise jwt.InvalidTokenError("no key in the issuer's JWKS matches the token")

    def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims; raises ``jwt.PyJWTError`` (or OSError for the JWKS)."""
        key = self._key(token)
        options: dict[str, Any] = {"require": ["exp", "iat", "sub", "iss"]}
        if not self.audience:
            options["verify_aud"] = False
        return jwt.decode(token, key, algorithms=EXTERNAL_ALGORITHMS, issuer=self.issuer,
                          audience=self.audience, leeway=30, options=options)


async def user_for_external(mu: MultiUser, issuer: str, claims: dict[str, Any]) -> str:
    """The local user of an external identity, created on first use (the issuer is trusted by config)."""
    from .users import USERNAME_RE, create_user

    subject = str(claims["sub"])
    found = await mu.store.scalar(select(external_identities.c.user_id).where(
        external_identities.c.issuer == issuer, external_identities.c.subject == subject))
    if found is not None:
        return str(found)
    email = claims.get("email") if claims.get("email_verified", True) else None
    base = str(claims.get("preferred_username") or (email or "").split("@")[0] or "user")
    base = "".join(c for c in base if c.isalnum() or c in "_.-")[:48] or "user"
    if not USERNAME_RE.match(base):
        base = "user-" + base
    async with mu.store.write_lock:
        for attempt in range(50):
            name = base if attempt == 0 else f"{base}-{attempt}"
            try:
                user_id = await create_user(mu, name, None, email=email,
                                            display_name=str(claims.get("name") or name)[:100])
                break
            except ValueError:
                continue
        else:
            name = f"user-{new_token(6)}"
            user_id = await create_user(mu, name, None, email=email)
        await mu.store.run(external_identities.insert().values(issuer=issuer, subject=subject, user_id=user_id))
    await mu.audit.record("user.create", user_id=user_id, via="external_issuer", issuer=issuer)
    return user_id


# --- routes -------------------------------------------------------------------------------------------


def register(routes: RouteTable, mu: MultiUser) -> None:
    external = None
    if mu.settings.external_issuer and mu.settings.external_jwks:
        external = ExternalIssuer(mu.settings.external_issuer, mu.settings.external_jwks,
                                  mu.settings.external_audience)

    @routes.get("/.well-known/jwks.json", api_mirror=False)
    async def get_jwks(request: Request) -> Response:
        assert mu.keys is not None
        response = ok(await mu.keys.jwks(), private=False)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    @routes.post("/auth/token", api_only=True)
    async def exchange_token(request: Request) -> Response:
        """Mint a workspace JWT for an external identity token, or for the caller's session or API key."""
        throttle(mu, "token", request)
        assert mu.keys is not None
        auth = request.headers.get("authorization", "")
        address = client_address(request)
        if auth[:7].lower() == "bearer ":
            if external is None:
                raise fail(401, "unauthorized", "No external token issuer is configured")
            try:
                claims = await asyncio.to_thread(external.verify, auth[7:].strip())
            except (jwt.PyJWTError, OSError, ValueError) as exc:
                await mu.audit.record("token.exchange", outcome="failure", address=address, reason=type(exc).__name__)
                raise fail(401, "invalid_token", "The identity token is invalid or expired") from None
            user_id = await user_for_external(mu, external.issuer, claims)
            method = "external"
        else:
            identity = identity_of(request)
            if not identity.authenticated or auth_method(identity) not in ("session", "api_key"):
                raise fail(401, "unauthorized", "Send an identity token as Bearer, or sign in")
            user_id, method = identity.user_id, auth_method(identity)
        new = method == "external"  # (perhaps created just now: read what was committed)
        user = await mu.store.user(user_id, fresh=new)
        if user is None or user["disabled"]:
            raise fail(401, "unauthorized", "This account is disabled")
        body = await json_body(request, required=False)
        workspace_id = body.get("workspace_id") or user["personal_workspace_id"]
        if not isinstance(workspace_id, str):
            raise fail(400, "invalid_request", "workspace_id must be a string")
        role = await mu.store.membership(workspace_id, user_id, fresh=new)
        workspace = await mu.store.one(select(workspaces).where(workspaces.c.id == workspace_id,
                                                                workspaces.c.deleted_at.is_(None)), fresh=new)
        if role is None or workspace is None:
            raise fail(404, "not_found", "Workspace not found or not a member")
        token, expires = await mu.keys.mint(user_id=user_id, workspace_id=workspace_id, role=role,
                                            scopes=FULL_SCOPES)
        await mu.audit.record("token.exchange", user_id=user_id, address=address, method=method,
                              workspace_id=workspace_id)
        return ok({"token": token, "expires_at": iso(expires),
                   "workspace": {"id": workspace["id"], "name": workspace["name"], "type": workspace["type"]},
                   "role": role, "permissions": ROLE_PERMISSIONS[role]})

    @routes.get("/workspace/api-keys")
    async def list_keys(request: Request) -> Response:
        identity = require_identity(request)
        stmt = select(api_keys).where(K.workspace_id == identity.workspace_id)
        if identity.extra.get("role") != "owner":
            stmt = stmt.where(K.user_id == identity.user_id)
        rows = await mu.store.all(stmt.order_by(K.created_at))
        return ok({"api_keys": [key_json(r) for r in rows]})

    @routes.post("/workspace/api-keys")
    async def create_key(request: Request) -> Response:
        identity = require_identity(request)
        if auth_method(identity) == "api_key":
            # A stolen key must not be able to mint itself a longer-lived sibling.
            raise fail(403, "forbidden", "API keys cannot create API keys; sign in instead")
        body = await json_body(request)
        name = text_field(body, "name", max_len=255)
        description = body.get("description") or ""
        if not isinstance(description, str) or len(description.encode("utf-8")) > 5000:
            raise fail(422, "validation_error", "description must be a string of at most 5000 bytes")
        expires_at = None
        if body.get("expires_at") is not None:
            try:
                expires_at = parse_iso(str(body["expires_at"]))
            except ValueError:
                raise fail(422, "validation_error", "expires_at must be an RFC 3339 timestamp") from None
            if expires_at <= now():
                raise fail(422, "validation_error", "expires_at must be in the future")
        count = await mu.store.scalar(select(func.count()).select_from(api_keys).where(
            K.workspace_id == identity.workspace_id, K.user_id == identity.user_id, K.revoked_at.is_(None)))
        if count and count >= MAX_KEYS_PER_USER:
            raise fail(429, "key_limit", f"At most {MAX_KEYS_PER_USER} active keys per user and workspace")
        key, prefix = new_api_key()
        key_id = new_id()
        t = now()
        await mu.store.run(api_keys.insert().values(
            id=key_id, key_hash=digest(key), key_prefix=prefix, workspace_id=identity.workspace_id,
            user_id=identity.user_id, name=name, description=description, created_at=t, expires_at=expires_at))
        await mu.audit.record("api_key.create", user_id=identity.user_id, address=client_address(request),
                              key_id=key_id, workspace_id=identity.workspace_id)
        out = {"id": key_id, "name": name, "description": description, "key": key, "key_prefix": prefix,
               "created_at": iso(t), "workspace_id": identity.workspace_id}
        if expires_at is not None:
            out["expires_at"] = iso(expires_at)
        return ok(out, 201)

    @routes.delete("/workspace/api-keys/{key_id}")
    async def revoke_key(request: Request) -> Response:
        identity = require_identity(request)
        row = await mu.store.one(select(api_keys).where(K.id == request.path_params["key_id"],
                                                        K.workspace_id == identity.workspace_id))
        if row is None:
            raise fail(404, "not_found", "API key not found")
        if row["user_id"] != identity.user_id and identity.extra.get("role") != "owner":
            raise fail(403, "forbidden", "Not authorized to revoke this key")
        await mu.store.run(update(api_keys).where(K.id == row["id"], K.revoked_at.is_(None)).values(revoked_at=now()))
        await mu.audit.record("api_key.revoke", user_id=row["user_id"], actor_id=identity.user_id,
                              address=client_address(request), key_id=row["id"])
        return Response(status_code=204)

    @routes.delete("/workspace/members/{user_id}/api-keys")
    async def bulk_revoke(request: Request) -> Response:
        identity = require_identity(request)
        if identity.extra.get("role") != "owner":
            raise fail(403, "forbidden", "Workspace owner role required")
        member = request.path_params["user_id"].strip()
        if not member:
            raise fail(422, "validation_error", "user_id is required")
        count = await mu.store.run(update(api_keys).where(
            K.workspace_id == identity.workspace_id, K.user_id == member, K.revoked_at.is_(None)).values(revoked_at=now()))
        await mu.audit.record("api_key.bulk_revoke", user_id=member, actor_id=identity.user_id,
                              address=client_address(request), workspace_id=identity.workspace_id, count=count)
        return ok({"revoked_count": count})

    @routes.post("/admin/signing-keys/rotate")
    async def rotate_keys(request: Request) -> Response:
        from .context import require_admin

        actor = require_admin(request)
        assert mu.keys is not None
        kid = await mu.keys.rotate()
        await mu.audit.record("signing_key.rotate", actor_id=actor.user_id, address=client_address(request), kid=kid)
        return ok({"kid": kid})
