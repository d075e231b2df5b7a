"""Workspaces: one personal workspace per user, team workspaces with owners and members.

Every request acts in exactly one workspace (``Identity.workspace_id``): an
API key or a JWT is bound to one; a session acts in the user's personal
workspace unless it sends ``Comfy-Workspace: <id>`` for a workspace it
belongs to. Queue, history, jobs and assets are keyed by that workspace, so
members of a team share them and nobody else sees them.

Routes under ``/workspace/`` act on the current workspace; ``/workspaces``
and ``/workspaces/{id}`` on any workspace the caller belongs to. Ids of
workspaces the caller does not belong to answer 404, never 403, so they
cannot be probed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.identity import Identity
from comfy_kernel.routing import RouteTable

from .context import MultiUser, client_address, fail, json_body, ok, require_identity, text_field
from .store import (
    api_keys,
    digest,
    folded,
    invites,
    iso,
    members,
    new_id,
    new_token,
    now,
    parse_iso,
    refresh_tokens,
    users,
    workspaces,
)

INVITE_TTL = 7 * 24 * 3600
MAX_WORKSPACES_PER_USER = 100

W, M, V = workspaces.c, members.c, invites.c


def workspace_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "type": row["type"], "created_at": iso(row["created_at"])}


def _require_owner(identity: Identity) -> None:
    if identity.extra.get("role") != "owner":
        raise fail(403, "forbidden", "Workspace owner role required")


async def _is_personal(mu: MultiUser, workspace_id: str | None) -> bool:
    kind = await mu.store.scalar(select(W.type).where(W.id == workspace_id))
    return kind is None or kind == "personal"


async def revoke_workspace_credentials(mu: MultiUser, workspace_id: str, user_id: str | None = None) -> None:
    """End a member's (or everyone's) API keys and OAuth grants in a workspace."""
    t = now()
    changes = []
    for table in (api_keys, refresh_tokens):
        stmt = update(table).where(table.c.workspace_id == workspace_id, table.c.revoked_at.is_(None))
        if user_id is not None:
            stmt = stmt.where(table.c.user_id == user_id)
        changes.append(stmt.values(revoked_at=t))
    await mu.store.run_many(changes)


def register(routes: RouteTable, mu: MultiUser) -> None:
    async def member_workspace(identity: Identity, workspace_id: str) -> tuple[Any, str]:
        row = await mu.store.one(select(workspaces).where(W.id == workspace_id, W.deleted_at.is_(None)))
        role = await mu.store.membership(workspace_id, identity.user_id) if row is not None else None
        if row is None or role is None:
            raise fail(404, "not_found", "Workspace not found")
        return row, role

    @routes.get("/workspaces")
    async def list_workspaces(request: Request) -> Response:
        identity = require_identity(request)
        rows = await mu.store.all(
            select(workspaces, M.role, M.joined_at).select_from(workspaces.join(members, M.workspace_id == W.id))
            .where(M.user_id == identity.user_id, W.deleted_at.is_(None)).order_by(W.type.desc(), W.created_at))
        return ok({"workspaces": [{**workspace_json(r), "role": r["role"], "joined_at": iso(r["joined_at"])}
                                  for r in rows]})

    @routes.post("/workspaces")
    async def create_workspace(request: Request) -> Response:
        identity = require_identity(request)
        name = text_field(await json_body(request), "name", max_len=100)
        count = await mu.store.scalar(select(func.count()).select_from(members)
                                      .where(M.user_id == identity.user_id, M.role == "owner"))
        if count and count >= MAX_WORKSPACES_PER_USER:
            raise fail(422, "validation_error", "Too many workspaces")
        workspace_id, t = new_id("w-"), now()
        await mu.store.run_many([
            workspaces.insert().values(id=workspace_id, name=name, type="team", created_by=identity.user_id,
                                       created_at=t),
            members.insert().values(workspace_id=workspace_id, user_id=identity.user_id, role="owner", joined_at=t),
        ])
        await mu.audit.record("workspace.create", user_id=identity.user_id, address=client_address(request),
                              workspace_id=workspace_id)
        row = await mu.store.one(select(workspaces).where(W.id == workspace_id), fresh=True)
        return ok(workspace_json(row), 201)

    @routes.get("/workspaces/{workspace_id}")
    async def get_workspace(request: Request) -> Response:
        identity = require_identity(request)
        row, role = await member_workspace(identity, request.path_params["workspace_id"])
        return ok({**workspace_json(row), "role": role})

    @routes.patch("/workspaces/{workspace_id}")
    async def update_workspace(request: Request) -> Response:
        identity = require_identity(request)
        row, role = await member_workspace(identity, request.path_params["workspace_id"])
        if role != "owner":
            raise fail(403, "forbidden", "Workspace owner role required")
        name = text_field(await json_body(request), "name", required=False, max_len=100)
        if name is not None:
            await mu.store.run(update(workspaces).where(W.id == row["id"]).values(name=name))
            await mu.audit.record("workspace.rename", user_id=identity.user_id, address=client_address(request),
                                  workspace_id=row["id"])
        return ok(workspace_json(await mu.store.one(select(workspaces).where(W.id == row["id"]), fresh=True)))

    @routes.delete("/workspaces/{workspace_id}")
    async def delete_workspace(request: Request) -> Response:
        identity = require_identity(request)
        row, role = await member_workspace(identity, request.path_params["workspace_id"])
        if role != "owner" or row["type"] == "personal":
            raise fail(403, "forbidden", "Only owners can delete a team workspace; personal ones stay")
        t = now()
        await mu.store.run_many([
            update(workspaces).where(W.id == row["id"]).values(deleted_at=t),
            update(invites).where(V.workspace_id == row["id"], V.accepted_at.is_(None), V.revoked_at.is_(None))
            .values(revoked_at=t),
        ])
        await revoke_workspace_credentials(mu, row["id"])
        await mu.audit.record("workspace.delete", user_id=identity.user_id, address=client_address(request),
                              workspace_id=row["id"])
        return Response(status_code=204)

    # --- invites ---------------------------------------------------------------------------

    def invite_json(row: Any, token: str | None = None) -> dict[str, Any]:
        out = {"id": row["id"], "email": row["email"], "invited_at": iso(row["created_at"]),
               "expires_at": iso(row["expires_at"])}
        if token is not None:
            out["token"] = token
        return out

    @routes.post("/workspace/invites")
    async def create_invite(request: Request) -> Response:
        identity = require_identity(request)
        _require_owner(identity)
        if await _is_personal(mu, identity.workspace_id):
            raise fail(403, "forbidden", "Personal workspaces cannot have invites")
        body = await json_body(request)
        target = text_field(body, "email", required=False, max_len=320) or text_field(body, "username", max_len=64)
        expires = now() + INVITE_TTL
        if body.get("expires_at") is not None:
            try:
                expires = parse_iso(str(body["expires_at"]))
            except ValueError:
                raise fail(422, "validation_error", "expires_at must be an RFC 3339 timestamp") from None
            if expires <= now():
                raise fail(422, "validation_error", "expires_at must be in the future")
        pending = await mu.store.one(select(V.id).where(
            V.workspace_id == identity.workspace_id, folded(V.email, target), V.accepted_at.is_(None),
            V.revoked_at.is_(None), V.expires_at > now()))
        if pending:
            raise fail(409, "conflict", "An invite for this address is already pending")
        token, invite_id = new_token(), new_id()
        await mu.store.run(invites.insert().values(
            id=invite_id, workspace_id=identity.workspace_id, email=target, token_hash=digest(token),
            invited_by=identity.user_id, created_at=now(), expires_at=expires))
        await mu.audit.record("invite.create", user_id=identity.user_id, address=client_address(request),
                              workspace_id=identity.workspace_id, invite_id=invite_id)
        row = await mu.store.one(select(invites).where(V.id == invite_id), fresh=True)
        return ok(invite_json(row, token), 201)

    @routes.get("/workspace/invites")
    async def list_invites(request: Request) -> Response:
        identity = require_identity(request)
        _require_owner(identity)
        rows = await mu.store.all(select(invites).where(
            V.workspace_id == identity.workspace_id, V.accepted_at.is_(None), V.revoked_at.is_(None))
            .order_by(V.created_at))
        # Tokens are stored hashed, so they are shown once, at creation.
        return ok({"invites": [invite_json(r) for r in rows]})

    @routes.delete("/workspace/invites/{invite_id}")
    async def revoke_invite(request: Request) -> Response:
        identity = require_identity(request)
        _require_owner(identity)
        changed = await mu.store.run(update(invites).where(
            V.id == request.path_params["invite_id"], V.workspace_id == identity.workspace_id,
            V.accepted_at.is_(None), V.revoked_at.is_(None)).values(revoked_at=now()))
        if not changed:
            raise fail(404, "not_found", "Invite not found")
        await mu.audit.record("invite.revoke", user_id=identity.user_id, address=client_address(request),
                              invite_id=request.path_params["invite_id"])
        return Response(status_code=204)

    @routes.post("/invites/{token}/accept")
    async def accept_invite(request: Request) -> Response:
        identity = require_identity(request)
        row = await mu.store.one(
            select(invites, W.name.label("workspace_name"))
            .select_from(invites.join(workspaces, W.id == V.workspace_id))
            .where(V.token_hash == digest(request.path_params["token"]), W.deleted_at.is_(None)))
        if row is None or row["accepted_at"] is not None or row["revoked_at"] is not None \
                or row["expires_at"] <= now():
            await mu.audit.record("invite.accept", outcome="failure", user_id=identity.user_id,
                                  address=client_address(request))
            raise fail(404, "not_found", "Invite not found or expired")
        user = await mu.store.user(identity.user_id)
        target = row["email"].lower()
        if user is None or target not in {(user["email"] or "").lower(), user["username"].lower()}:
            raise fail(403, "forbidden", "This invite is for someone else")
        if await mu.store.membership(row["workspace_id"], identity.user_id):
            raise fail(409, "conflict", "Already a member of this workspace")
        t = now()
        await mu.store.run_many([
            members.insert().values(workspace_id=row["workspace_id"], user_id=identity.user_id, role="member",
                                    joined_at=t),
            update(invites).where(V.id == row["id"]).values(accepted_at=t),
        ])
        await mu.audit.record("invite.accept", user_id=identity.user_id, address=client_address(request),
                              workspace_id=row["workspace_id"])
        return ok({"workspace_id": row["workspace_id"], "workspace_name": row["workspace_name"]})

    # --- members -------------------------------------------------------------------------------

    @routes.get("/workspace/members")
    async def list_members(request: Request) -> Response:
        identity = require_identity(request)
        try:
            offset = int(request.query_params.get("offset", 0))
            limit = int(request.query_params.get("limit", 50))
        except ValueError:
            raise fail(422, "validation_error", "offset and limit must be integers") from None
        if offset < 0 or not 1 <= limit <= 500:
            raise fail(422, "validation_error", "offset must be >= 0 and limit 1-500")
        n = int(await mu.store.scalar(select(func.count()).select_from(members)
                                      .where(M.workspace_id == identity.workspace_id)) or 0)
        rows = await mu.store.all(
            select(users.c.id, users.c.display_name, users.c.email, M.role, M.joined_at)
            .select_from(members.join(users, users.c.id == M.user_id)).where(M.workspace_id == identity.workspace_id)
            .order_by(M.joined_at).limit(limit).offset(offset))
        return ok({"members": [{"id": r["id"], "name": r["display_name"], "email": r["email"] or "",
                                "role": r["role"], "joined_at": iso(r["joined_at"])} for r in rows],
                   "pagination": {"offset": offset, "limit": limit, "total": n, "has_more": offset + len(rows) < n}})

    @routes.patch("/workspace/members/{member_id}")
    async def change_role(request: Request) -> Response:
        identity = require_identity(request)
        _require_owner(identity)
        member = request.path_params["member_id"]
        role = (await json_body(request)).get("role")
        if role not in ("owner", "member"):
            raise fail(422, "validation_error", "role must be owner or member")
        if await _is_personal(mu, identity.workspace_id):
            raise fail(403, "forbidden", "Personal workspaces have one owner")
        if member == identity.user_id and role == "member" and await _owner_count(mu, identity.workspace_id) < 2:
            raise fail(403, "forbidden", "A workspace needs at least one owner")
        changed = await mu.store.run(update(members).where(M.workspace_id == identity.workspace_id,
                                                           M.user_id == member).values(role=role))
        if not changed:
            raise fail(404, "not_found", "Member not found")
        await mu.audit.record("role.change", user_id=member, actor_id=identity.user_id,
                              address=client_address(request), workspace_id=identity.workspace_id, role=role)
        return ok({"id": member, "role": role})

    @routes.delete("/workspace/members/{member_id}")
    async def remove_member(request: Request) -> Response:
        identity = require_identity(request)
        _require_owner(identity)
        member = request.path_params["member_id"]
        if member == identity.user_id:
            raise fail(403, "forbidden", "Use /workspace/leave to leave a workspace")
        if await _is_personal(mu, identity.workspace_id):
            raise fail(404, "not_found", "Member not found")
        changed = await mu.store.run(delete(members).where(M.workspace_id == identity.workspace_id,
                                                           M.user_id == member))
        if not changed:
            raise fail(404, "not_found", "Member not found")
        await revoke_workspace_credentials(mu, identity.workspace_id or "", member)
        await mu.audit.record("member.remove", user_id=member, actor_id=identity.user_id,
                              address=client_address(request), workspace_id=identity.workspace_id)
        return Response(status_code=204)

    @routes.post("/workspace/leave")
    async def leave(request: Request) -> Response:
        identity = require_identity(request)
        if await _is_personal(mu, identity.workspace_id):
            raise fail(403, "forbidden", "You cannot leave your personal workspace")
        if identity.extra.get("role") == "owner" and await _owner_count(mu, identity.workspace_id) < 2:
            raise fail(403, "forbidden", "You are the only owner; delete the workspace or add another owner")
        await mu.store.run(delete(members).where(M.workspace_id == identity.workspace_id,
                                                 M.user_id == identity.user_id))
        await revoke_workspace_credentials(mu, identity.workspace_id or "", identity.user_id)
        await mu.audit.record("member.leave", user_id=identity.user_id, address=client_address(request),
                              workspace_id=identity.workspace_id)
        return Response(status_code=204)


async def _owner_count(mu: MultiUser, workspace_id: str | None) -> int:
    return int(await mu.store.scalar(select(func.count()).select_from(members)
                                     .where(M.workspace_id == workspace_id, M.role == "owner")) or 0)
