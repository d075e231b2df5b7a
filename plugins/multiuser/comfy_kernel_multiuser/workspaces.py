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

from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.identity import Identity
from comfy_kernel.routing import RouteTable

from .context import MultiUser, client_address, fail, json_body, ok, require_identity, text_field
from .store import digest, iso, new_id, new_token, now, parse_iso

INVITE_TTL = 7 * 24 * 3600
MAX_WORKSPACES_PER_USER = 100


def workspace_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "type": row["type"], "created_at": iso(row["created_at"])}


def _require_owner(identity: Identity) -> None:
    if identity.extra.get("role") != "owner":
        raise fail(403, "forbidden", "Workspace owner role required")


def _is_personal(mu: MultiUser, workspace_id: str | None) -> bool:
    row = mu.store.read_one("SELECT type FROM mu_workspaces WHERE id=?", (workspace_id,))
    return row is None or row["type"] == "personal"


async def revoke_workspace_credentials(mu: MultiUser, workspace_id: str, user_id: str | None = None) -> None:
    """End a member's (or everyone's) API keys and OAuth grants in a workspace."""
    t = now()
    if user_id is None:
        await mu.store.run_many([
            ("UPDATE mu_api_keys SET revoked_at=? WHERE workspace_id=? AND revoked_at IS NULL", (t, workspace_id)),
            ("UPDATE mu_refresh_tokens SET revoked_at=? WHERE workspace_id=? AND revoked_at IS NULL",
             (t, workspace_id)),
        ])
    else:
        await mu.store.run_many([
            ("UPDATE mu_api_keys SET revoked_at=? WHERE workspace_id=? AND user_id=? AND revoked_at IS NULL",
             (t, workspace_id, user_id)),
            ("UPDATE mu_refresh_tokens SET revoked_at=? WHERE workspace_id=? AND user_id=? AND revoked_at IS NULL",
             (t, workspace_id, user_id)),
        ])


def register(routes: RouteTable, mu: MultiUser) -> None:
    async def member_workspace(identity: Identity, workspace_id: str) -> tuple[Any, str]:
        row = await mu.store.one("SELECT * FROM mu_workspaces WHERE id=? AND deleted_at IS NULL", (workspace_id,))
        role = await mu.store.membership(workspace_id, identity.user_id) if row is not None else None
        if row is None or role is None:
            raise fail(404, "not_found", "Workspace not found")
        return row, role

    @routes.get("/workspaces")
    async def list_workspaces(request: Request) -> Response:
        identity = require_identity(request)
        rows = await mu.store.all(
            "SELECT w.*, m.role, m.joined_at FROM mu_workspaces w JOIN mu_members m ON m.workspace_id=w.id "
            "WHERE m.user_id=? AND w.deleted_at IS NULL ORDER BY w.type DESC, w.created_at", (identity.user_id,))
        return ok({"workspaces": [{**workspace_json(r), "role": r["role"], "joined_at": iso(r["joined_at"])}
                                  for r in rows]})

    @routes.post("/workspaces")
    async def create_workspace(request: Request) -> Response:
        identity = require_identity(request)
        name = text_field(await json_body(request), "name", max_len=100)
        count = await mu.store.one("SELECT COUNT(*) AS n FROM mu_members WHERE user_id=? AND role='owner'",
                                   (identity.user_id,))
        if count and count["n"] >= MAX_WORKSPACES_PER_USER:
            raise fail(422, "validation_error", "Too many workspaces")
        workspace_id, t = new_id("w-"), now()
        await mu.store.run_many([
            ("INSERT INTO mu_workspaces(id, name, type, created_by, created_at) VALUES (?,?,?,?,?)",
             (workspace_id, name, "team", identity.user_id, t)),
            ("INSERT INTO mu_members(workspace_id, user_id, role, joined_at) VALUES (?,?,?,?)",
             (workspace_id, identity.user_id, "owner", t)),
        ])
        await mu.audit.record("workspace.create", user_id=identity.user_id, address=client_address(request),
                              workspace_id=workspace_id)
        row = await mu.store.one("SELECT * FROM mu_workspaces WHERE id=?", (workspace_id,))
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
            await mu.store.run("UPDATE mu_workspaces SET name=? WHERE id=?", (name, row["id"]))
            await mu.audit.record("workspace.rename", user_id=identity.user_id, address=client_address(request),
                                  workspace_id=row["id"])
        return ok(workspace_json(await mu.store.one("SELECT * FROM mu_workspaces WHERE id=?", (row["id"],))))

    @routes.delete("/workspaces/{workspace_id}")
    async def delete_workspace(request: Request) -> Response:
        identity = require_identity(request)
        row, role = await member_workspace(identity, request.path_params["workspace_id"])
        if role != "owner" or row["type"] == "personal":
            raise fail(403, "forbidden", "Only owners can delete a team workspace; personal ones stay")
        t = now()
        await mu.store.run_many([
            ("UPDATE mu_workspaces SET deleted_at=? WHERE id=?", (t, row["id"])),
            ("UPDATE mu_invites SET revoked_at=? WHERE workspace_id=? AND accepted_at IS NULL AND revoked_at IS NULL",
             (t, row["id"])),
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
        if _is_personal(mu, identity.workspace_id):
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
        pending = await mu.store.one(
            "SELECT 1 FROM mu_invites WHERE workspace_id=? AND email=? AND accepted_at IS NULL AND revoked_at IS NULL "
            "AND expires_at>?", (identity.workspace_id, target, now()))
        if pending:
            raise fail(409, "conflict", "An invite for this address is already pending")
        token, invite_id = new_token(), new_id()
        await mu.store.run(
            "INSERT INTO mu_invites(id, workspace_id, email, token_hash, invited_by, created_at, expires_at) "
            "VALUES (?,?,?,?,?,?,?)", (invite_id, identity.workspace_id, target, digest(token), identity.user_id,
                                       now(), expires))
        await mu.audit.record("invite.create", user_id=identity.user_id, address=client_address(request),
                              workspace_id=identity.workspace_id, invite_id=invite_id)
        row = await mu.store.one("SELECT * FROM mu_invites WHERE id=?", (invite_id,))
        return ok(invite_json(row, token), 201)

    @routes.get("/workspace/invites")
    async def list_invites(request: Request) -> Response:
        identity = require_identity(request)
        _require_owner(identity)
        rows = await mu.store.all(
            "SELECT * FROM mu_invites WHERE workspace_id=? AND accepted_at IS NULL AND revoked_at IS NULL "
            "ORDER BY created_at", (identity.workspace_id,))
        # Tokens are stored hashed, so they are shown once, at creation.
        return ok({"invites": [invite_json(r) for r in rows]})

    @routes.delete("/workspace/invites/{invite_id}")
    async def revoke_invite(request: Request) -> Response:
        identity = require_identity(request)
        _require_owner(identity)
        changed = await mu.store.run(
            "UPDATE mu_invites SET revoked_at=? WHERE id=? AND workspace_id=? AND accepted_at IS NULL "
            "AND revoked_at IS NULL", (now(), request.path_params["invite_id"], identity.workspace_id))
        if not changed:
            raise fail(404, "not_found", "Invite not found")
        await mu.audit.record("invite.revoke", user_id=identity.user_id, address=client_address(request),
                              invite_id=request.path_params["invite_id"])
        return Response(status_code=204)

    @routes.post("/invites/{token}/accept")
    async def accept_invite(request: Request) -> Response:
        identity = require_identity(request)
        row = await mu.store.one("SELECT i.*, w.name AS workspace_name FROM mu_invites i JOIN mu_workspaces w "
                                 "ON w.id=i.workspace_id WHERE i.token_hash=? AND w.deleted_at IS NULL",
                                 (digest(request.path_params["token"]),))
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
            ("INSERT INTO mu_members(workspace_id, user_id, role, joined_at) VALUES (?,?,?,?)",
             (row["workspace_id"], identity.user_id, "member", t)),
            ("UPDATE mu_invites SET accepted_at=? WHERE id=?", (t, row["id"])),
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
        total = await mu.store.one("SELECT COUNT(*) AS n FROM mu_members WHERE workspace_id=?",
                                   (identity.workspace_id,))
        rows = await mu.store.all(
            "SELECT u.id, u.display_name, u.email, m.role, m.joined_at FROM mu_members m JOIN mu_users u "
            "ON u.id=m.user_id WHERE m.workspace_id=? ORDER BY m.joined_at LIMIT ? OFFSET ?",
            (identity.workspace_id, limit, offset))
        n = int(total["n"]) if total else 0
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
        if _is_personal(mu, identity.workspace_id):
            raise fail(403, "forbidden", "Personal workspaces have one owner")
        if member == identity.user_id and role == "member" and await _owner_count(mu, identity.workspace_id) < 2:
            raise fail(403, "forbidden", "A workspace needs at least one owner")
        changed = await mu.store.run("UPDATE mu_members SET role=? WHERE workspace_id=? AND user_id=?",
                                     (role, identity.workspace_id, member))
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
        if _is_personal(mu, identity.workspace_id):
            raise fail(404, "not_found", "Member not found")
        changed = await mu.store.run("DELETE FROM mu_members WHERE workspace_id=? AND user_id=?",
                                     (identity.workspace_id, member))
        if not changed:
            raise fail(404, "not_found", "Member not found")
        await revoke_workspace_credentials(mu, identity.workspace_id or "", member)
        await mu.audit.record("member.remove", user_id=member, actor_id=identity.user_id,
                              address=client_address(request), workspace_id=identity.workspace_id)
        return Response(status_code=204)

    @routes.post("/workspace/leave")
    async def leave(request: Request) -> Response:
        identity = require_identity(request)
        if _is_personal(mu, identity.workspace_id):
            raise fail(403, "forbidden", "You cannot leave your personal workspace")
        if identity.extra.get("role") == "owner" and await _owner_count(mu, identity.workspace_id) < 2:
            raise fail(403, "forbidden", "You are the only owner; delete the workspace or add another owner")
        await mu.store.run("DELETE FROM mu_members WHERE workspace_id=? AND user_id=?",
                           (identity.workspace_id, identity.user_id))
        await revoke_workspace_credentials(mu, identity.workspace_id or "", identity.user_id)
        await mu.audit.record("member.leave", user_id=identity.user_id, address=client_address(request),
                              workspace_id=identity.workspace_id)
        return Response(status_code=204)


async def _owner_count(mu: MultiUser, workspace_id: str | None) -> int:
    row = await mu.store.one("SELECT COUNT(*) AS n FROM mu_members WHERE workspace_id=? AND role='owner'",
                             (workspace_id,))
    return int(row["n"]) if row else 0
