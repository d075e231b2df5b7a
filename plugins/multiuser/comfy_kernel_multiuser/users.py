"""Users: Argon2id password hashes, the first administrator, ``/user`` and ``/users``.

The first administrator comes from ``comfy-kernel users create --admin`` or,
when a server starts with ``--auth`` and no user exists, from a one-time setup
link printed on the console (valid 24 hours, consumed on use). Every user
gets a personal workspace at creation, so every request can act in one.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import re
import sys
from importlib import resources
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from comfy_kernel.routing import RouteTable

from .context import (
    MultiUser,
    client_address,
    fail,
    json_body,
    no_store,
    ok,
    require_admin,
    require_identity,
    same,
    throttle,
)
from .store import (
    audit_log,
    digest,
    folded,
    is_conflict,
    iso,
    members,
    new_id,
    new_token,
    now,
    sessions,
    setup_tokens,
    users,
    workspaces,
)

log = logging.getLogger(__name__)

#: RFC 9106's second recommended profile: Argon2id, 64 MiB, 3 passes, 4 lanes.
HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
SETUP_TTL = 24 * 3600
#: Verifying against this keeps "unknown user" as slow as "wrong password".
_DUMMY_HASH = HASHER.hash("not a password of anyone")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Check a password in constant time with respect to whether the user exists."""
    try:
        return HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_username(username: Any) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username.strip()):
        raise ValueError("username must be 1-64 letters, digits or _.@- and start with a letter or digit")
    return username.strip()


def check_password(password: Any) -> str:
    if not isinstance(password, str) or not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise ValueError(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def user_rows(user_id: str, username: str, password_hash: str | None, *, admin: bool, email: str | None,
              display_name: str | None = None) -> list[Any]:
    """The statements creating a user, its personal workspace and its owner membership."""
    t = now()
    workspace_id = new_id("w-")
    return [
        users.insert().values(id=user_id, username=username, display_name=display_name or username, email=email,
                              password_hash=password_hash, is_admin=int(admin), disabled=0,
                              personal_workspace_id=workspace_id, created_at=t),
        workspaces.insert().values(id=workspace_id, name="Personal", type="personal", created_by=user_id,
                                   created_at=t),
        members.insert().values(workspace_id=workspace_id, user_id=user_id, role="owner", joined_at=t),
    ]


async def create_user(mu: MultiUser, username: str, password: str | None, *, admin: bool = False,
                      email: str | None = None, display_name: str | None = None) -> str:
    """Create a user (hashing off the event loop); raises ValueError on a taken name."""
    username = check_username(username)
    password_hash = await asyncio.to_thread(hash_password, check_password(password)) if password else None
    user_id = new_id("u-")
    try:
        await mu.store.run_many(user_rows(user_id, username, password_hash, admin=admin, email=email,
                                          display_name=display_name))
    except Exception as exc:
        if not is_conflict(exc):
            raise
        raise ValueError("username already taken") from None
    return user_id


def user_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "username": row["username"], "name": row["display_name"],
            "email": row["email"], "is_admin": bool(row["is_admin"]), "disabled": bool(row["disabled"]),
            "personal_workspace_id": row["personal_workspace_id"], "created_at": iso(row["created_at"])}


# --- the one-time setup link ---------------------------------------------------------


async def ensure_setup_link(mu: MultiUser) -> str | None:
    """With no user yet, mint a setup token and print its link; return the token."""
    if await mu.store.user_count() > 0:
        return None
    token = new_token()
    await mu.store.run(setup_tokens.insert().values(token_hash=digest(token), created_at=now(),
                                                    expires_at=now() + SETUP_TTL))
    config = mu.kernel.config
    host = (config.listen or "127.0.0.1").split(",")[0].strip()
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    scheme = "https" if mu.settings.tls else "http"
    base = mu.settings.public_url or f"{scheme}://{host}:{config.port}"
    link = f"{base}/auth/setup#token={token}"
    message = (f"No users exist yet. Create the first administrator within 24 hours at:\n  {link}\n"
               f"(or run: comfy-kernel users create --admin --username NAME)")
    print(message, flush=True)
    log.warning("multiuser: no users yet; a one-time setup link was printed on the console")
    return token


def _page(name: str) -> str:
    return resources.files(__package__).joinpath("pages", name).read_text(encoding="utf-8")


PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
                "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


# --- routes -------------------------------------------------------------------------------


def register(routes: RouteTable, mu: MultiUser) -> None:
    @routes.get("/user")
    async def get_user(request: Request) -> Response:
        identity = require_identity(request)
        row = await mu.store.user(identity.user_id)
        if row is None:
            raise fail(401, "unauthorized", "Sign-in required")
        return ok({**user_json(row), "status": "active", "workspace_id": identity.workspace_id,
                   "role": identity.extra.get("role"), "auth_method": identity.extra.get("method")})

    @routes.get("/users")
    async def get_users(request: Request) -> Response:
        # The frontend reads "storage": "server" and no "users" map as "the server
        # knows who I am": no local user picker, settings live on the server.
        require_identity(request)
        return ok({"storage": "server", "migrated": True})

    @routes.post("/users")
    async def post_users(request: Request) -> Response:
        actor = require_admin(request)
        body = await json_body(request)
        try:
            user_id = await create_user(mu, body.get("username"), check_password(body.get("password")),
                                        admin=bool(body.get("is_admin", False)), email=body.get("email"))
        except ValueError as exc:
            raise fail(400, "invalid_user", str(exc)) from None
        await mu.audit.record("user.create", user_id=user_id, actor_id=actor.user_id,
                              address=client_address(request), admin=bool(body.get("is_admin", False)))
        return ok(user_id)

    @routes.get("/admin/users")
    async def list_users(request: Request) -> Response:
        require_admin(request)
        rows = await mu.store.all(select(users).order_by(users.c.created_at))
        return ok({"users": [user_json(r) for r in rows]})

    @routes.patch("/admin/users/{user_id}")
    async def update_user(request: Request) -> Response:
        actor = require_admin(request)
        user_id = request.path_params["user_id"]
        row = await mu.store.user(user_id)
        if row is None:
            raise fail(404, "not_found", "User not found")
        body = await json_body(request)
        changes: list[Any] = []
        this_user = update(users).where(users.c.id == user_id)
        if "is_admin" in body:
            if user_id == actor.user_id and not body["is_admin"]:
                raise fail(400, "invalid_request", "You cannot remove your own administrator role")
            changes.append(this_user.values(is_admin=int(bool(body["is_admin"]))))
        if "disabled" in body:
            if user_id == actor.user_id:
                raise fail(400, "invalid_request", "You cannot disable yourself")
            changes.append(this_user.values(disabled=int(bool(body["disabled"]))))
            if body["disabled"]:
                changes.append(delete(sessions).where(sessions.c.user_id == user_id))
        if "password" in body:
            try:
                hashed = await asyncio.to_thread(hash_password, check_password(body["password"]))
            except ValueError as exc:
                raise fail(400, "invalid_password", str(exc)) from None
            changes.append(this_user.values(password_hash=hashed))
            changes.append(delete(sessions).where(sessions.c.user_id == user_id))
        if "email" in body:
            changes.append(this_user.values(email=body["email"] or None))
        await mu.store.run_many(changes)
        await mu.audit.record("user.update", user_id=user_id, actor_id=actor.user_id,
                              address=client_address(request), fields=sorted(k for k in body if k != "password")
                              + (["password"] if "password" in body else []))
        if "is_admin" in body:
            await mu.audit.record("role.change", user_id=user_id, actor_id=actor.user_id,
                                  address=client_address(request), is_admin=bool(body["is_admin"]))
        return ok(user_json(await mu.store.user(user_id, fresh=True)))

    @routes.post("/user/password")
    async def change_password(request: Request) -> Response:
        identity = require_identity(request)
        throttle(mu, "password", request)
        body = await json_body(request)
        row = await mu.store.user(identity.user_id)
        current = body.get("current_password")
        if row is None or not isinstance(current, str) or \
                not await asyncio.to_thread(verify_password, row["password_hash"], current):
            await mu.audit.record("password.change", outcome="failure", user_id=identity.user_id,
                                  address=client_address(request))
            raise fail(403, "invalid_credentials", "The current password is wrong")
        try:
            hashed = await asyncio.to_thread(hash_password, check_password(body.get("new_password")))
        except ValueError as exc:
            raise fail(400, "invalid_password", str(exc)) from None
        keep = identity.extra.get("session")
        await mu.store.run_many([
            update(users).where(users.c.id == identity.user_id).values(password_hash=hashed),
            delete(sessions).where(sessions.c.user_id == identity.user_id,
                                   sessions.c.token_hash.is_distinct_from(keep)),
        ])
        await mu.audit.record("password.change", user_id=identity.user_id, address=client_address(request))
        return ok({"success": True})

    @routes.get("/auth/setup", api_mirror=False)
    async def setup_page(request: Request) -> Response:
        return HTMLResponse(_page("setup.html"), headers=PAGE_HEADERS)

    @routes.get("/auth/setup.js", api_mirror=False)
    async def setup_script(request: Request) -> Response:
        return Response(_page("setup.js"), media_type="text/javascript", headers={"Cache-Control": "no-store"})

    @routes.post("/auth/setup", api_only=True)
    async def post_setup(request: Request) -> Response:
        """Create the first administrator with the one-time setup token."""
        throttle(mu, "setup", request)
        body = await json_body(request)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise fail(400, "invalid_request", "token is required")
        async with mu.store.write_lock:
            row = await mu.store.one(select(setup_tokens).where(setup_tokens.c.token_hash == digest(token)))
            if row is None or row["used_at"] is not None or row["expires_at"] < now() \
                    or not same(row["token_hash"], digest(token)) or await mu.store.user_count() > 0:
                await mu.audit.record("setup", outcome="failure", address=client_address(request))
                raise fail(403, "invalid_token", "This setup link is invalid, expired or already used")
            try:
                user_id = await create_user(mu, body.get("username"), check_password(body.get("password")),
                                            admin=True, email=body.get("email"))
            except ValueError as exc:
                raise fail(400, "invalid_user", str(exc)) from None
            await mu.store.run(update(setup_tokens).where(setup_tokens.c.token_hash == digest(token))
                               .values(used_at=now()))
        await mu.audit.record("user.create", user_id=user_id, address=client_address(request), admin=True,
                              via="setup_link")
        return no_store(ok({"id": user_id, "is_admin": True}, 201))


# --- the ``comfy-kernel users`` command ------------------------------------------------------


def add_commands(subparsers: Any) -> None:
    from comfy_kernel.config import add_server_arguments

    parser = subparsers.add_parser("users", help="manage users of an --auth server (create, list, passwords)")
    add_server_arguments(parser)
    parser.add_argument("action", choices=["create", "list", "set-password", "disable", "enable"])
    parser.add_argument("--username", default=None)
    parser.add_argument("--email", default=None)
    parser.add_argument("--admin", action="store_true", help="create an administrator")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input instead of prompting")
    parser.set_defaults(func=run_command)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise ValueError("the passwords differ")
    return first


def run_command(args: argparse.Namespace) -> int:
    from comfy_kernel.kernel import Kernel

    kernel = Kernel(args)
    kernel.host.discover()  # every plugin's migrations: the database may already hold their versions
    try:
        return asyncio.run(_with_database(kernel, args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _with_database(kernel: Any, args: argparse.Namespace) -> int:
    """Open ``kernel.database`` (as a server would: migrated to every head), run the command, close it."""
    from comfy_kernel.storage import upgrade

    db = kernel.database
    if db.kind == "sqlite":
        os.makedirs(os.path.dirname(db.path), exist_ok=True)
    await db.open()
    try:
        await upgrade(db, kernel.migrations())
        return await _command(db, args)
    finally:
        await db.close()


def _cli_audit(event: str, user_id: str) -> Any:
    return audit_log.insert().values(at=now(), event=event, outcome="success", user_id=user_id,
                                     detail='{"via":"cli"}')


async def _command(db: Any, args: argparse.Namespace) -> int:
    if args.action == "list":
        for row in await db.fetch_all(select(users.c.id, users.c.username, users.c.is_admin, users.c.disabled)
                                      .order_by(users.c.created_at)):
            flags = ",".join(f for f, on in (("admin", row[2]), ("disabled", row[3])) if on)
            print(f"{row[0]}  {row[1]}  {flags}")
        return 0
    if not args.username:
        raise ValueError("--username is required")
    if args.action == "create":
        username = check_username(args.username)
        password_hash = hash_password(check_password(_read_password(args)))
        user_id = new_id("u-")
        try:
            async with db.transaction() as tx:
                for stmt in user_rows(user_id, username, password_hash, admin=args.admin, email=args.email):
                    await tx.execute(stmt)
                await tx.execute(_cli_audit("user.create", user_id))
        except Exception as exc:
            if not is_conflict(exc):
                raise
            raise ValueError("username already taken") from None
        print(user_id)
        return 0
    user_id = await db.scalar(select(users.c.id).where(folded(users.c.username, args.username)))
    if user_id is None:
        raise ValueError("no such user")
    this_user = update(users).where(users.c.id == user_id)
    hashed = hash_password(check_password(_read_password(args))) if args.action == "set-password" else None
    async with db.transaction() as tx:
        if hashed is not None:
            await tx.execute(this_user.values(password_hash=hashed))
            await tx.execute(delete(sessions).where(sessions.c.user_id == user_id))
        else:
            await tx.execute(this_user.values(disabled=int(args.action == "disable")))
            if args.action == "disable":
                await tx.execute(delete(sessions).where(sessions.c.user_id == user_id))
        await tx.execute(_cli_audit(f"user.{args.action}", user_id))
    print("ok")
    return 0
