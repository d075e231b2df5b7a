"""OAuth 2.1 authorization server for public clients (MCP-style tools, scripts, desktop apps).

* Metadata: RFC 8414 (``/.well-known/oauth-authorization-server``) and
  RFC 9728 (``/.well-known/oauth-protected-resource``). The protected
  resource is this server; its scopes are ``read`` and ``write``.
* Dynamic client registration (RFC 7591) with the seed's policy: public
  clients only, server-owned scopes, ``native`` clients redirect to loopback
  or reverse-DNS custom schemes, ``web`` clients to HTTPS hosts of
  ``--auth-dcr-https-hosts``; reserved names cannot be impersonated.
* ``/oauth/authorize``: GET validates the request, stores it server-side and
  answers a consent challenge carrying a per-request CSRF token (browsers are
  sent to the sign-in page, then to a small consent page); POST records the
  decision once (single use, allow or deny) and answers the redirect URL.
* ``/oauth/token``: ``authorization_code`` with PKCE S256 (required; codes
  are single-use and live 60 seconds) and ``refresh_token`` with rotation:
  each refresh token works once, and presenting one that was already rotated
  revokes its whole family (and the access tokens minted from it).
  Every answer carries ``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from comfy_kernel.routing import RouteTable

from .context import (
    SCOPES,
    MultiUser,
    auth_method,
    client_address,
    fail,
    identity_of,
    json_body,
    no_store,
    ok,
    same,
)
from .store import (
    digest,
    members,
    new_id,
    new_token,
    now,
    oauth_clients,
    oauth_codes,
    oauth_consents,
    oauth_requests,
    refresh_tokens,
    workspaces,
)
from .users import PAGE_HEADERS, _page

REQUEST_TTL = 600
CODE_TTL = 60
DEFAULT_SCOPE = " ".join(SCOPES)
RESOURCE_NAME = "comfy-kernel API"
REJECTED_METADATA = {"scope", "resource_grants", "client_uri", "contacts", "jwks", "jwks_uri", "logo_uri",
                     "policy_uri", "software_id", "software_version", "tos_uri"}
ALLOWED_METADATA = {"application_type", "client_name", "grant_types", "redirect_uris", "response_types",
                    "token_endpoint_auth_method"}
#: Names third parties may not register (compared NFKC-folded, letters and digits only).
RESERVED_NAMES = ("claude", "anthropic", "cursor", "windsurf", "codeium", "chatgpt", "openai", "copilot",
                  "vscode", "visualstudiocode", "comfyui", "comfykernel", "comfyorg")
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
REVERSE_DNS_SCHEME = re.compile(r"^[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+$")

C, Q, D, R = oauth_clients.c, oauth_requests.c, oauth_codes.c, refresh_tokens.c


def _fold(name: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", name).casefold() if c.isalnum())


def reserved_name(name: str) -> bool:
    folded = _fold(name)
    return any(reserved in folded for reserved in RESERVED_NAMES)


def redirect_allowed(uri: str, application_type: str, https_hosts: list[str]) -> bool:
    """The seed's redirect-URI policy for dynamically registered clients."""
    if not isinstance(uri, str) or len(uri) > 2000 or "#" in uri:
        return False
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if application_type == "web":
        return scheme == "https" and (parts.hostname or "").lower() in https_hosts
    if scheme in ("http", "https"):
        return (parts.hostname or "").lower() in LOOPBACK_HOSTS
    return bool(REVERSE_DNS_SCHEME.match(scheme))


def redirect_matches(requested: str, registered: list[str]) -> bool:
    """Exact match, except that loopback redirects may use any port (RFC 8252 §7.3)."""
    if requested in registered:
        return True
    try:
        want = urlsplit(requested)
    except ValueError:
        return False
    if want.scheme != "http" or (want.hostname or "") not in LOOPBACK_HOSTS:
        return False
    for uri in registered:
        have = urlsplit(uri)
        if (have.scheme, have.hostname, have.path, have.query) == (want.scheme, want.hostname, want.path, want.query):
            return True
    return False


def pkce_s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def with_params(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


def register_error(code: str, description: str) -> Response:
    return no_store(ok({"error": code, "error_description": description}, 400))


def token_error(code: str, description: str, status: int = 400) -> Response:
    return no_store(ok({"error": code, "error_description": description}, status))


def register(routes: RouteTable, mu: MultiUser) -> None:
    def resource(request: Request) -> str:
        return mu.base_url(request)

    def cached(content: dict[str, Any]) -> Response:
        response = ok(content, private=False)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    @routes.get("/.well-known/oauth-authorization-server", api_mirror=False)
    async def server_metadata(request: Request) -> Response:
        base = resource(request)
        return cached({
            "issuer": base, "authorization_endpoint": base + "/oauth/authorize",
            "token_endpoint": base + "/oauth/token", "jwks_uri": base + "/.well-known/jwks.json",
            "registration_endpoint": base + "/oauth/register", "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"], "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": list(SCOPES), "authorization_response_iss_parameter_supported": True})

    @routes.get("/.well-known/oauth-protected-resource", api_mirror=False)
    async def resource_metadata(request: Request) -> Response:
        base = resource(request)
        return cached({"resource": base, "authorization_servers": [base], "scopes_supported": list(SCOPES),
                       "bearer_methods_supported": ["header"], "resource_name": RESOURCE_NAME})

    # --- registration -------------------------------------------------------------------------

    @routes.post("/oauth/register", api_mirror=False)
    async def register_client(request: Request) -> Response:
        from .context import throttle

        throttle(mu, "register", request)
        try:
            body = await json_body(request)
        except Exception:
            return register_error("invalid_client_metadata", "The body must be a JSON object")
        present = {k for k, v in body.items() if v is not None}
        if present & REJECTED_METADATA:
            return register_error("invalid_client_metadata",
                                  f"Not accepted: {', '.join(sorted(present & REJECTED_METADATA))}")
        unknown = set(body) - ALLOWED_METADATA - REJECTED_METADATA
        if unknown:
            return register_error("invalid_client_metadata", f"Unknown metadata: {', '.join(sorted(unknown))}")
        app_type = body.get("application_type") or "native"
        if app_type not in ("native", "web"):
            return register_error("invalid_client_metadata", "application_type must be native or web")
        if body.get("token_endpoint_auth_method") not in (None, "none"):
            return register_error("invalid_client_metadata", "Only public clients (token_endpoint_auth_method none)")
        grants = body.get("grant_types") or ["authorization_code", "refresh_token"]
        responses = body.get("response_types") or ["code"]
        if not isinstance(grants, list) or not set(grants) <= {"authorization_code", "refresh_token"} \
                or "authorization_code" not in grants:
            return register_error("invalid_client_metadata", "grant_types must include authorization_code")
        if responses != ["code"]:
            return register_error("invalid_client_metadata", "response_types must be [\"code\"]")
        name = body.get("client_name") or "Unnamed client"
        if not isinstance(name, str) or len(name) > 100:
            return register_error("invalid_client_metadata", "client_name must be at most 100 characters")
        if reserved_name(name):
            await mu.audit.record("oauth.register", outcome="failure", address=client_address(request),
                                  reason="reserved_name")
            return register_error("invalid_client_metadata", "This client name is reserved")
        uris = body.get("redirect_uris")
        if not isinstance(uris, list) or not 1 <= len(uris) <= 5:
            return register_error("invalid_redirect_uri", "redirect_uris must list 1 to 5 URIs")
        for uri in uris:
            if not redirect_allowed(uri, app_type, mu.settings.dcr_https_hosts):
                return register_error("invalid_redirect_uri", f"Redirect URI not allowed for {app_type} clients")
        client_id, issued = "comfy-dyn-" + new_token(16), now()
        await mu.store.run(oauth_clients.insert().values(
            client_id=client_id, client_name=name, application_type=app_type, redirect_uris=json.dumps(uris),
            grant_types=json.dumps(grants), response_types=json.dumps(responses), created_at=issued))
        await mu.audit.record("oauth.register", address=client_address(request), client_id=client_id)
        return no_store(ok({"client_id": client_id, "client_id_issued_at": int(issued), "client_name": name,
                            "redirect_uris": uris, "grant_types": grants, "response_types": responses,
                            "token_endpoint_auth_method": "none", "application_type": app_type}, 201))

    # --- authorization -------------------------------------------------------------------------

    async def challenge(request: Request, row: Any) -> Response:
        identity = identity_of(request)
        client_name = await mu.store.scalar(select(C.client_name).where(C.client_id == row["client_id"]))
        W, M = workspaces.c, members.c
        choices = await mu.store.all(
            select(W.id, W.name, W.type, M.role).select_from(workspaces.join(members, M.workspace_id == W.id))
            .where(M.user_id == identity.user_id, W.deleted_at.is_(None)).order_by(W.type.desc(), W.created_at))
        return ok({"oauth_request_id": row["id"], "csrf_token": row["csrf_token"],
                   "client_display_name": client_name if client_name is not None else row["client_id"],
                   "resource_display_name": RESOURCE_NAME, "scopes": row["scope"].split(),
                   "workspaces": [{"id": w["id"], "name": w["name"], "type": w["type"], "role": w["role"]}
                                  for w in choices]})

    def signed_in(request: Request) -> bool:
        identity = identity_of(request)
        return identity.authenticated and auth_method(identity) == "session"

    def to_browser_page(request: Request, request_id: str) -> Response | None:
        """Browsers get pages (sign-in, then consent); API callers get JSON."""
        consent = f"/auth/consent?oauth_request_id={request_id}"
        if not signed_in(request):
            return RedirectResponse("/auth/login?" + urlencode({"next": consent}), status_code=302,
                                    headers={"Cache-Control": "no-store"})
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(consent, status_code=302, headers={"Cache-Control": "no-store"})
        return None

    @routes.get("/oauth/authorize", api_mirror=False)
    async def authorize(request: Request) -> Response:
        q = request.query_params
        request_id = q.get("oauth_request_id")
        if request_id:
            row = await mu.store.one(select(oauth_requests).where(Q.id == request_id))
            if row is None or row["consumed_at"] is not None or row["expires_at"] <= now():
                raise fail(400, "invalid_request", "This authorization request is unknown, expired or used")
            return to_browser_page(request, row["id"]) or await challenge(request, row)
        client = await mu.store.one(select(oauth_clients).where(C.client_id == (q.get("client_id") or "")))
        redirect_uri = q.get("redirect_uri") or ""
        if client is None:
            raise fail(400, "invalid_request", "Unknown client_id")
        if not redirect_matches(redirect_uri, json.loads(client["redirect_uris"])):
            raise fail(400, "invalid_request", "redirect_uri is not registered for this client")
        state = q.get("state")
        if not state:
            raise fail(400, "invalid_request", "state is required")

        def refuse(code: str, description: str) -> Response:
            return RedirectResponse(with_params(redirect_uri, {"error": code, "error_description": description,
                                                               "state": state, "iss": resource(request)}),
                                    status_code=302, headers={"Cache-Control": "no-store"})

        if q.get("response_type") != "code":
            return refuse("unsupported_response_type", "response_type must be code")
        challenge_value = q.get("code_challenge") or ""
        if q.get("code_challenge_method") != "S256" or not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge_value):
            return refuse("invalid_request", "PKCE with code_challenge_method S256 is required")
        scopes = (q.get("scope") or DEFAULT_SCOPE).split()
        if not scopes or not set(scopes) <= set(SCOPES):
            return refuse("invalid_scope", f"Scopes must be among: {' '.join(SCOPES)}")
        wanted_resource = q.get("resource") or resource(request)
        if wanted_resource.rstrip("/") != resource(request):
            return refuse("invalid_target", "Unknown resource")
        row_id = new_id()
        await mu.store.run(oauth_requests.insert().values(
            id=row_id, client_id=client["client_id"], redirect_uri=redirect_uri, scope=" ".join(sorted(set(scopes))),
            state=state, code_challenge=challenge_value, resource=resource(request), csrf_token=new_token(),
            created_at=now(), expires_at=now() + REQUEST_TTL))
        row = await mu.store.one(select(oauth_requests).where(Q.id == row_id), fresh=True)
        return to_browser_page(request, row_id) or await challenge(request, row)

    @routes.post("/oauth/authorize", api_mirror=False)
    async def consent(request: Request) -> Response:
        if not signed_in(request):
            raise fail(401, "unauthorized", "Sign in to answer an authorization request")
        identity = identity_of(request)
        body = await json_body(request)
        row = await mu.store.one(select(oauth_requests).where(Q.id == str(body.get("oauth_request_id"))))
        if row is None or row["consumed_at"] is not None or row["expires_at"] <= now():
            raise fail(400, "invalid_request", "This authorization request is unknown, expired or used")
        if not same(str(body.get("csrf_token") or ""), row["csrf_token"]):
            await mu.audit.record("oauth.consent", outcome="failure", user_id=identity.user_id,
                                  address=client_address(request), reason="csrf")
            raise fail(400, "invalid_request", "CSRF token mismatch")
        decision = body.get("decision")
        if decision not in ("allow", "deny"):
            raise fail(400, "invalid_request", "decision must be allow or deny")
        workspace_id = str(body.get("workspace_id") or "")
        if decision == "allow" and await mu.store.membership(workspace_id, identity.user_id) is None:
            raise fail(400, "invalid_request", "That workspace is not accessible")
        consumed = await mu.store.run(update(oauth_requests).where(Q.id == row["id"], Q.consumed_at.is_(None))
                                      .values(consumed_at=now(), user_id=identity.user_id))
        if not consumed:
            raise fail(400, "invalid_request", "This authorization request was already answered")
        iss = row["resource"]
        if decision == "deny":
            await mu.audit.record("oauth.consent", outcome="denied", user_id=identity.user_id,
                                  address=client_address(request), client_id=row["client_id"])
            return ok({"redirect_url": with_params(row["redirect_uri"], {
                "error": "access_denied", "error_description": "The user denied the request",
                "state": row["state"], "iss": iss})})
        code = new_token()
        t = now()
        consent_row = mu.store.insert(oauth_consents).values(
            user_id=identity.user_id, client_id=row["client_id"], resource=row["resource"], workspace_id=workspace_id,
            scope=row["scope"], granted_at=t)
        await mu.store.run_many([
            oauth_codes.insert().values(
                code_hash=digest(code), client_id=row["client_id"], user_id=identity.user_id,
                workspace_id=workspace_id, scope=row["scope"], resource=row["resource"],
                redirect_uri=row["redirect_uri"], code_challenge=row["code_challenge"], expires_at=t + CODE_TTL),
            consent_row.on_conflict_do_update(
                index_elements=["user_id", "client_id", "resource", "workspace_id"],
                set_={"scope": consent_row.excluded.scope, "granted_at": consent_row.excluded.granted_at}),
        ])
        await mu.audit.record("oauth.consent", user_id=identity.user_id, address=client_address(request),
                              client_id=row["client_id"], workspace_id=workspace_id, scope=row["scope"])
        return ok({"redirect_url": with_params(row["redirect_uri"], {"code": code, "state": row["state"],
                                                                     "iss": iss})})

    @routes.get("/auth/consent", api_mirror=False)
    async def consent_page(request: Request) -> Response:
        return HTMLResponse(_page("consent.html"), headers=PAGE_HEADERS)

    @routes.get("/auth/consent.js", api_mirror=False)
    async def consent_script(request: Request) -> Response:
        return Response(_page("consent.js"), media_type="text/javascript", headers={"Cache-Control": "no-store"})

    # --- tokens -----------------------------------------------------------------------------------

    async def issue(request: Request, *, client_id: str, user_id: str, workspace_id: str, scope: str,
                    resource_url: str, family: str) -> Response:
        """Mint an access token and a refresh token of ``family`` after re-checking the user and membership."""
        assert mu.keys is not None
        user = await mu.store.user(user_id)
        role = await mu.store.membership(workspace_id, user_id)
        if user is None or user["disabled"] or role is None:
            await revoke_family(family)
            return token_error("invalid_grant", "The grant is no longer valid")
        access, _ = await mu.keys.mint(user_id=user_id, workspace_id=workspace_id, role=role,
                                       scopes=set(scope.split()), audience=resource_url,
                                       extra={"client_id": client_id, "fam": family})
        refresh = new_token()
        t = now()
        await mu.store.run(refresh_tokens.insert().values(
            token_hash=digest(refresh), family_id=family, client_id=client_id, user_id=user_id,
            workspace_id=workspace_id, scope=scope, resource=resource_url, created_at=t,
            expires_at=t + mu.settings.refresh_ttl))
        return no_store(ok({"access_token": access, "token_type": "Bearer", "expires_in": mu.settings.token_ttl,
                            "refresh_token": refresh, "scope": scope}))

    async def revoke_family(family: str | None) -> None:
        if family:
            await mu.store.run(update(refresh_tokens).where(R.family_id == family, R.revoked_at.is_(None))
                               .values(revoked_at=now()))

    @routes.post("/oauth/token", api_mirror=False)
    async def token(request: Request) -> Response:
        from .context import throttle

        throttle(mu, "token", request)
        try:
            form = await request.form()
        except Exception:
            return token_error("invalid_request", "Send application/x-www-form-urlencoded parameters")
        params = {k: str(v) for k, v in form.items()}
        if "client_secret" in params:
            return token_error("invalid_client", "Only public clients are supported", 401)
        client_id = params.get("client_id", "")
        client = await mu.store.one(select(oauth_clients).where(C.client_id == client_id))
        if client is None:
            return token_error("invalid_client", "Unknown client", 401)
        grant = params.get("grant_type")
        address = client_address(request)
        if grant == "authorization_code":
            code = params.get("code", "")
            row = await mu.store.one(select(oauth_codes).where(D.code_hash == digest(code)))
            if row is None or row["client_id"] != client_id:
                return token_error("invalid_grant", "Invalid authorization code")
            if row["used_at"] is not None:
                # A replayed code: fail closed and revoke what the first use produced.
                await revoke_family(row["family_id"])
                await mu.audit.record("oauth.code_reuse", outcome="failure", user_id=row["user_id"],
                                      address=address, client_id=client_id)
                return token_error("invalid_grant", "Invalid authorization code")
            if row["expires_at"] <= now() or params.get("redirect_uri") != row["redirect_uri"]:
                return token_error("invalid_grant", "Invalid authorization code")
            verifier = params.get("code_verifier", "")
            if not VERIFIER_RE.match(verifier) or not same(pkce_s256(verifier), row["code_challenge"]):
                await mu.audit.record("oauth.token", outcome="failure", user_id=row["user_id"], address=address,
                                      reason="pkce")
                return token_error("invalid_grant", "PKCE verification failed")
            family = new_id("f-")
            used = await mu.store.run(update(oauth_codes).where(D.code_hash == row["code_hash"], D.used_at.is_(None))
                                      .values(used_at=now(), family_id=family))
            if not used:
                return token_error("invalid_grant", "Invalid authorization code")
            await mu.audit.record("oauth.token", user_id=row["user_id"], address=address, client_id=client_id,
                                  grant="authorization_code")
            return await issue(request, client_id=client_id, user_id=row["user_id"],
                               workspace_id=row["workspace_id"], scope=row["scope"], resource_url=row["resource"],
                               family=family)
        if grant == "refresh_token":
            if "refresh_token" not in json.loads(client["grant_types"]):
                return token_error("unauthorized_client", "This client may not use refresh tokens")
            presented = params.get("refresh_token", "")
            row = await mu.store.one(select(refresh_tokens).where(R.token_hash == digest(presented)))
            if row is None or row["client_id"] != client_id:
                return token_error("invalid_grant", "Invalid refresh token")
            if row["revoked_at"] is not None:
                return token_error("invalid_grant", "Invalid refresh token")
            if row["rotated_at"] is not None:
                await revoke_family(row["family_id"])
                await mu.audit.record("oauth.refresh_reuse", outcome="failure", user_id=row["user_id"],
                                      address=address, client_id=client_id, family=row["family_id"])
                return token_error("invalid_grant", "Invalid refresh token")
            if row["expires_at"] <= now():
                return token_error("invalid_grant", "Invalid refresh token")
            scope = row["scope"]
            if params.get("scope"):
                wanted = set(params["scope"].split())
                if not wanted <= set(scope.split()):
                    return token_error("invalid_scope", "A refresh cannot widen the granted scopes")
                scope = " ".join(sorted(wanted))
            rotated = await mu.store.run(update(refresh_tokens).where(
                R.token_hash == row["token_hash"], R.rotated_at.is_(None), R.revoked_at.is_(None))
                .values(rotated_at=now()))
            if not rotated:  # lost a race with another use of the same token: that is reuse too
                await revoke_family(row["family_id"])
                return token_error("invalid_grant", "Invalid refresh token")
            return await issue(request, client_id=client_id, user_id=row["user_id"],
                               workspace_id=row["workspace_id"], scope=scope, resource_url=row["resource"],
                               family=row["family_id"])
        return token_error("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")

