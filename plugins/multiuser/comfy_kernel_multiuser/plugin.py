"""Entry point of the ``multiuser`` plugin: wires its modules into the kernel's hooks.

Without ``--auth`` every hook here does nothing (no routes, no identity
decisions, no middleware), so the server behaves as ComfyUI's single-user
or ``--multi-user`` mode whether or not this plugin is installed; the hooks
that run per request and per prompt (:mod:`.auth_hooks`) are not even
registered then.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.middleware import Middleware

from comfy_kernel import hookimpl
from comfy_kernel.storage import Migrations

from . import audit, auth_hooks, config, enforcement, interrupts, outputs, sessions, tokens, users
from .context import state

log = logging.getLogger(__name__)


@hookimpl
def ck_add_arguments(parser: Any) -> None:
    config.add_arguments(parser)


@hookimpl
def ck_add_commands(subparsers: Any) -> None:
    users.add_commands(subparsers)


@hookimpl
def ck_migrations(kernel: Any) -> list[Migrations]:
    """The plugin's tables, with or without ``--auth``: a database once used with it keeps its versions."""
    from .migrations import MULTIUSER

    return [MULTIUSER]


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    mu = state(kernel)
    if not mu.enabled:
        return
    _add_auth_hooks(kernel)
    try:
        users.register(routes, mu)
        sessions.register(routes, mu)
        enforcement.register(routes, mu)
        audit.register(routes, mu.audit)
        tokens.register(routes, mu)
        for name in ("workspaces", "secrets", "oauth"):
            module = _optional(name)
            if module is not None:
                module.register(routes, mu)
    except Exception:
        # Same reasoning as in ck_startup: never let the kernel drop the identity hook.
        log.exception("multiuser: route registration failed; every request will be refused")
        mu.broken = True


def _add_auth_hooks(kernel: Any) -> None:
    """The identity, prompt and output hooks run per request and per prompt: registered only with --auth."""
    host = getattr(kernel, "host", None)
    if host is not None:
        host.add_hooks("multiuser", auth_hooks)


def _optional(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{name}":
            raise
        return None


@hookimpl
def ck_middleware(kernel: Any) -> list[Any]:
    mu = state(kernel)
    if not mu.enabled:
        return []
    return [Middleware(enforcement.LoginRedirect, mu=mu), Middleware(outputs.UploadRecorder, mu=mu),
            Middleware(interrupts.InterruptGuard, mu=mu)]


@hookimpl
async def ck_startup(kernel: Any) -> None:
    mu = state(kernel)
    if not mu.enabled:
        return
    _add_auth_hooks(kernel)  # (once; an app may have been built without routes)
    try:
        secrets_module = _optional("secrets")
        if secrets_module is not None and mu.settings.secrets_key:
            mu.secret_box = secrets_module.SecretBox(mu.settings.secrets_key)
        await mu.store.open()
        mu.ownership = outputs.Ownership(mu)
        await _forget_expired(mu)
        auth_hooks.STATES.append(mu)
        mu.keys = tokens.SigningKeys(mu)
        await mu.keys.load()
        mu.started = not mu.broken
        await users.ensure_setup_link(mu)
        await mu.audit.record("server.start")
    except Exception:
        # Raising would make the kernel unregister this plugin and serve every
        # route without authentication; staying registered but refusing all
        # requests (see enforcement.resolve) fails closed instead.
        log.exception("multiuser: start-up failed; every request will be refused")
        mu.started = False
        mu.broken = True


async def _forget_expired(mu: Any) -> None:
    """Drop credentials that can no longer be used, so the tables do not grow forever."""
    from sqlalchemy import delete

    from .store import now, oauth_codes, oauth_requests, refresh_tokens, sessions, setup_tokens, signing_keys

    t = now()
    await mu.store.run_many([
        delete(sessions).where(sessions.c.expires_at < t),
        delete(oauth_requests).where(oauth_requests.c.expires_at < t),
        delete(oauth_codes).where(oauth_codes.c.expires_at < t - 3600),
        delete(refresh_tokens).where(refresh_tokens.c.expires_at < t),
        delete(setup_tokens).where(setup_tokens.c.expires_at < t),
        delete(signing_keys).where(signing_keys.c.verify_until < t),
    ])


@hookimpl
async def ck_shutdown(kernel: Any) -> None:
    mu = kernel.state.get("multiuser")
    if mu is not None and mu.enabled:
        mu.started = False
        if mu in auth_hooks.STATES:
            auth_hooks.STATES.remove(mu)
        await mu.store.close()


@hookimpl
def ck_feature_flags(kernel: Any) -> dict[str, Any]:
    mu = kernel.state.get("multiuser")
    return {"auth": True} if mu is not None and getattr(mu, "enabled", False) else {}
