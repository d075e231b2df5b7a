"""Per-server state of the plugin and the helpers every route module shares.

One :class:`MultiUser` exists per kernel (``kernel.state["multiuser"]``). It
is created when routes are registered (before start-up); its tables live in
``kernel.database``, which the kernel opens and migrates before ``ck_startup``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from comfy_kernel.http import HTTPError, JSONTooDeep, check_json_content_type, json_response, loads_checked
from comfy_kernel.identity import Identity

from .audit import Audit
from .config import Settings
from .ratelimit import RateLimiter
from .store import Store

if TYPE_CHECKING:  # pragma: no cover
    from .secrets import SecretBox
    from .tokens import SigningKeys

#: Scopes a token can carry. ``read`` allows safe methods only; ``write`` the rest.
SCOPES = ("read", "write")
FULL_SCOPES = frozenset(SCOPES)


class MultiUser:
    def __init__(self, kernel: Any):
        self.kernel = kernel
        self.settings = Settings.from_config(kernel.config)
        self.store = Store(kernel.database)
        self.audit = Audit(self.store)
        self.limiter = RateLimiter(self.settings.rate_limit, self.settings.max_failures, self.settings.lockout)
        self.keys: SigningKeys | None = None
        self.secret_box: SecretBox | None = None
        self.ownership: Any = None
        #: WebSocket client ids -> owner key of whoever first connected with them.
        self.client_owners: dict[str, str] = {}
        #: Lazily compiled route patterns (see enforcement.RoutePolicy).
        self.policy: Any = None
        self.started = False
        #: Start-up failed: refuse everything rather than serve unauthenticated.
        self.broken = False

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def issuer(self, request: HTTPConnection | None = None) -> str:
        """The token issuer: the configured public URL, else a fixed name.

        Tokens must verify however the server is reached (``localhost`` or an
        IP), so without ``--auth-public-url`` the issuer is not a URL.
        """
        return self.settings.public_url or "comfy-kernel"

    def base_url(self, request: HTTPConnection) -> str:
        """Where this server is reached: the public URL, else the request's own origin."""
        if self.settings.public_url:
            return self.settings.public_url
        return f"{request.url.scheme}://{request.url.netloc}"


def state(kernel: Any) -> MultiUser:
    mu = kernel.state.get("multiuser")
    if mu is None:
        mu = MultiUser(kernel)
        kernel.state["multiuser"] = mu
    return mu


# --- errors and bodies ---------------------------------------------------------


def fail(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> HTTPError:
    """An error in the seed's ``ErrorResponse`` shape: ``{"code", "message"}``."""
    return HTTPError(status, message, type=code, body={"code": code, "message": message}, headers=headers)


async def json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object body; ``{}`` for an empty body when not required."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise fail(400, "invalid_request", "A JSON object body is required")
        return {}
    check_json_content_type(request)
    try:
        value = loads_checked(raw)
    except JSONTooDeep as exc:
        raise fail(400, "json_too_deep", str(exc)) from None
    except ValueError:
        raise fail(400, "invalid_request", "The body is not valid JSON") from None
    if not isinstance(value, dict):
        raise fail(400, "invalid_request", "The body must be a JSON object")
    return value


def text_field(body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 255,
               min_len: int = 1) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise fail(422, "validation_error", f"{name} is required")
        return None
    if not isinstance(value, str) or not (min_len <= len(value.strip()) <= max_len):
        raise fail(422, "validation_error", f"{name} must be a string of {min_len} to {max_len} characters")
    return value.strip()


def no_store(response: Response) -> Response:
    """Responses carrying credentials must never be cached (RFC 6749 §5.1)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def ok(content: Any, status: int = 200, *, private: bool = True) -> Response:
    response = json_response(content, status)
    if private:
        no_store(response)
    return response


# --- identity helpers --------------------------------------------------------------


def identity_of(request: HTTPConnection) -> Identity:
    return getattr(request.state, "identity", None) or Identity()


def require_identity(request: HTTPConnection) -> Identity:
    identity = identity_of(request)
    if not identity.authenticated:
        raise fail(401, "unauthorized", "Sign-in required")
    return identity


def require_admin(request: HTTPConnection) -> Identity:
    identity = require_identity(request)
    if not identity.is_admin:
        raise fail(403, "forbidden", "Administrator role required")
    return identity


def auth_method(identity: Identity) -> str:
    return str(identity.extra.get("method", ""))


def client_address(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


def same(a: str | None, b: str | None) -> bool:
    """Constant-time string comparison (False when either side is missing)."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def throttle(mu: MultiUser, endpoint: str, request: HTTPConnection) -> None:
    """Apply the per-address request cap of a credential-checking endpoint."""
    wait = mu.limiter.hit(endpoint, client_address(request))
    if wait is not None:
        raise fail(429, "too_many_requests", "Too many requests; try again later",
                   headers={"Retry-After": str(int(wait) + 1)})
