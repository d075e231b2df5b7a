"""Small helpers every route module of the plugin shares: errors, identities, times, parameters."""

from __future__ import annotations

import datetime
from typing import Any

from starlette.requests import Request

from comfy_kernel.http import HTTPError, read_json
from comfy_kernel.identity import LOCAL_USER, Identity

#: Marks a route the seed declares public (``security: []``) or that carries its own
#: credential (a signed upload URL). It rides in ``RouteSpec.extra`` for an auth
#: plugin to read; it changes nothing by itself.
PUBLIC: dict[str, Any] = {"public": True}


def fail(status: int, code: str, message: str, **extra: Any) -> HTTPError:
    """An error in the seed's ``ErrorResponse`` shape (``code``, ``message``).

    The kernel's own ``error`` object rides along so that clients written for
    either error style find what they look for.
    """
    body = {"code": code, "message": message, **extra,
            "error": {"type": code.lower(), "message": message, "details": extra or ""}}
    return HTTPError(status, message, type=code.lower(), body=body)


def identity(request: Request) -> Identity:
    return getattr(request.state, "identity", None) or LOCAL_USER


def owner_key(request: Request) -> str:
    """What hub rows are owned by: the workspace when there is one, else the user."""
    return identity(request).key


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat().replace("+00:00", "Z")


async def json_object(request: Request) -> dict[str, Any]:
    try:
        return await read_json(request, object_only=True)
    except HTTPError as exc:  # invalid_json, json_too_deep, unsupported_media_type
        raise fail(exc.status, exc.type.upper(), exc.message) from None


def int_param(value: str | None, name: str, default: int, lo: int, hi: int | None = None) -> int:
    """A query integer within bounds; out-of-range or junk is a 400, not silently clamped."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise fail(400, "INVALID_QUERY", f"{name} must be an integer") from None
    if number < lo or (hi is not None and number > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise fail(400, "INVALID_QUERY", f"{name} must be {bounds}")
    return number


def choice(value: str | None, name: str, options: tuple[str, ...], default: str | None) -> str | None:
    if value is None or value == "":
        return default
    if value not in options:
        raise fail(400, "INVALID_QUERY", f"{name} must be one of {', '.join(options)}")
    return value


def optional_str(body: dict[str, Any], key: str, *, max_len: int = 10_000, status: int = 422) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail(status, "VALIDATION_ERROR", f"{key} must be a string")
    if len(value) > max_len:
        raise fail(status, "VALIDATION_ERROR", f"{key} is longer than {max_len} characters")
    return value
