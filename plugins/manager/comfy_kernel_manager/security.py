"""ComfyUI-Manager's security levels, and the guard against cross-site GETs.

Operations carry a risk: ``middle`` (uninstall, update, restore, reboot, …)
and ``high`` (installing something that is not in the catalog: a git URL, a
pip requirement, a model from an unknown host). The configured level decides:

* ``strong``  — neither middle nor high.
* ``normal``  — middle; high never.
* ``normal-`` — middle; high only while the server listens on loopback.
* ``weak``    — everything, on any interface.

Refusals are 403, as ComfyUI-Manager answers them. Separately, the legacy API
changes state with GET requests; a browser sends those cross-site from any
page (an ``<img src>``), so state-changing GETs whose ``Sec-Fetch-Site`` or
``Referer`` says they come from another site are refused too.

The Manager 4 routes (``/v2/...``) change state only with POST, and refuse a
POST a page of another site could send without a CORS preflight: a form's
content types (``application/x-www-form-urlencoded``, ``multipart/form-data``,
``text/plain``) are refused with 400, a body must be ``application/json``, and
a POST whose ``Origin``/``Sec-Fetch-Site`` names another site is refused with
403. Under ``--auth`` every manager route is for administrators only.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from comfy_kernel.http import json_response

log = logging.getLogger(__name__)

# The content types a browser sends without a CORS preflight (a plain <form> or a no-cors fetch).
SIMPLE_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})


def is_loopback_listen(listen: str | None) -> bool:
    """True when every listen address is a loopback one (local mode)."""
    addresses = [a.strip() for a in (listen or "127.0.0.1").split(",") if a.strip()]
    for address in addresses:
        if address.lower() == "localhost":
            continue
        try:
            if not ipaddress.ip_address(address.strip("[]")).is_loopback:
                return False
        except ValueError:
            return False
    return True


def allowed(level: str, risk: str, local: bool) -> bool:
    if risk == "block":
        return False
    if risk == "high":
        return level == "weak" or (level == "normal-" and local)
    if risk == "middle":
        return level in ("weak", "normal", "normal-")
    return True


def refusal_message(action: str, risk: str, level: str, local: bool) -> str:
    need = "weak" if risk == "high" and not local else ("normal- or weak" if risk == "high" else "normal or below")
    message = (f"ERROR: To use this action ({action}), a security_level of '{need}' is required "
               f"(current: '{level}'{'' if local else ', listening on a non-loopback address'}). "
               "Change security_level in the manager's config.ini.")
    log.warning("manager refused %s: %s", action, message)
    return message


def refusal(action: str, risk: str, level: str, local: bool) -> Response:
    return PlainTextResponse(refusal_message(action, risk, level, local), status_code=403)


def cross_site(request: Request) -> bool:
    """Whether the request was made by a page of another site."""
    fetch_site = request.headers.get("sec-fetch-site", "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return True
    if fetch_site in ("same-origin", "none"):
        return False
    host = request.headers.get("host", "").lower()
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value and value != "null":
            netloc = urllib.parse.urlsplit(value).netloc.lower()
            if netloc and netloc != host:
                return True
    return False


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json_type(kind: str) -> bool:
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def v2_error(status: int, message: str) -> Response:
    """Manager 4's error body (``error``), plus ``message``, which the frontend shows."""
    return json_response({"error": message, "message": message}, status)


def not_admin(request: Request) -> bool:
    """A signed-in caller who is not an administrator (only with an auth plugin such as ``--auth``)."""
    identity = getattr(request.state, "identity", None)
    return bool(identity is not None and getattr(identity, "authenticated", False)
                and not getattr(identity, "is_admin", False))


def admin_only(handler: Any) -> Any:
    """Wrap a route handler so signed-in non-administrators get 403 (installing code is an admin's job)."""
    async def guarded(request: Request) -> Response:
        if not_admin(request):
            log.warning("manager refused %s %s for a non-administrator", request.method, request.url.path)
            if request.url.path.startswith(("/v2/", "/api/v2/")):
                return v2_error(403, "the manager is for administrators only")
            return PlainTextResponse("ERROR: the manager is for administrators only", status_code=403)
        return await handler(request)
    guarded.__name__ = getattr(handler, "__name__", "manager_route")
    guarded.__doc__ = handler.__doc__
    return guarded


class Guard:
    """Checks one request against the configured level and listen address."""

    def __init__(self, manager: Any):
        self.manager = manager

    @property
    def local(self) -> bool:
        return is_loopback_listen(getattr(self.manager.kernel.config, "listen", None))

    def check(self, request: Request, action: str, risk: str, changes_state: bool = True) -> Response | None:
        """None when allowed, else the 403 response to send."""
        if changes_state and request.method == "GET" and cross_site(request):
            log.warning("manager refused cross-site GET %s", request.url.path)
            return PlainTextResponse("ERROR: state-changing request from another site refused", status_code=403)
        level = self.manager.settings.security_level
        if not allowed(level, risk, self.local):
            return refusal(action, risk, level, self.local)
        return None

    def allows(self, risk: str) -> bool:
        return allowed(self.manager.settings.security_level, risk, self.local)

    def check_post(self, request: Request, action: str, risk: str) -> Response | None:
        """The Manager 4 rule for a state-changing POST: None when allowed, else the error response.

        (A body, where a handler reads one, must also be JSON: see ``v2.read_body``.)
        """
        kind = content_type(request)
        if kind in SIMPLE_CONTENT_TYPES:
            return v2_error(400, f"Content-Type {kind!r} is not accepted here: send application/json "
                                 "(a plain form post cannot change the manager's state)")
        if cross_site(request):
            log.warning("manager refused cross-site POST %s", request.url.path)
            return v2_error(403, "state-changing request from another site refused")
        level = self.manager.settings.security_level
        if not allowed(level, risk, self.local):
            return v2_error(403, refusal_message(action, risk, level, self.local))
        return None
