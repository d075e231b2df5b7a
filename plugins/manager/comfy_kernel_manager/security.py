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
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

log = logging.getLogger(__name__)


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


def refusal(action: str, risk: str, level: str, local: bool) -> Response:
    need = "weak" if risk == "high" and not local else ("normal- or weak" if risk == "high" else "normal or below")
    message = (f"ERROR: To use this action ({action}), a security_level of '{need}' is required "
               f"(current: '{level}'{'' if local else ', listening on a non-loopback address'}). "
               "Change security_level in the manager's config.ini.")
    log.warning("manager refused %s: %s", action, message)
    return PlainTextResponse(message, status_code=403)


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
