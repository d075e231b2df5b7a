"""Workspaces: personal and team, roles, invites, members, leave, rename, delete, scoped keys."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from plugins.multiuser.tests.conftest import AuthServer

WS = "Comfy-Workspace"


def _team(auth: AuthServer, owner, name: str = "Team"):
    r = owner.post("/api/workspaces", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def _join(auth: AuthServer, owner, team_id: str, member) -> None:
    invite = owner.post("/api/workspace/invites", json={"username": member.username}, headers={WS: team_id})
    assert invite.status_code == 201, invite.text
    accepted = member.post(f"/api/invites/{invite.json()['token']}/accept")
    assert accepted.status_code == 200, accepted.text


def test_personal_workspace_exists_and_is_current(auth: AuthServer):
    user = auth.new_user()
    listed = user.get("/api/workspaces").json()["workspaces"]
    assert len(listed) == 1 and listed[0]["type"] == "personal" and listed[0]["role"] == "owner"
    assert listed[0]["id"] == user.workspace_id
    assert user.delete(f"/api/workspaces/{user.workspace_id}").status_code == 403
    assert user.post("/api/workspace/leave").status_code == 403
    assert user.post("/api/workspace/invites", json={"email": "x@example.com"}).status_code == 403


def test_team_lifecycle(auth: AuthServer):
    owner, member, outsider = auth.new_user(), auth.new_user(), auth.new_user()
    team = _team(auth, owner, "Studio")
    assert team["type"] == "team" and team["name"] == "Studio"
    assert outsider.get(f"/api/workspaces/{team['id']}").status_code == 404
    assert outsider.get("/api/user", headers={WS: team["id"]}).status_code == 403

    _join(auth, owner, team["id"], member)
    got = member.get(f"/api/workspaces/{team['id']}").json()
    assert got["role"] == "member"
    members = owner.get("/api/workspace/members", headers={WS: team["id"]}).json()
    assert {m["id"]: m["role"] for m in members["members"]} == {owner.id: "owner", member.id: "member"}
    assert members["pagination"]["total"] == 2 and members["pagination"]["has_more"] is False

    # Members cannot manage the workspace.
    assert member.patch(f"/api/workspaces/{team['id']}", json={"name": "Mine"}).status_code == 403
    assert member.delete(f"/api/workspaces/{team['id']}").status_code == 403
    assert member.get("/api/workspace/invites", headers={WS: team["id"]}).status_code == 403
    assert member.delete(f"/api/workspace/members/{owner.id}", headers={WS: team["id"]}).status_code == 403

    renamed = owner.patch(f"/api/workspaces/{team['id']}", json={"name": "Studio 2"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Studio 2"

    # The only owner cannot leave; a member can.
    assert owner.post("/api/workspace/leave", headers={WS: team["id"]}).status_code == 403
    assert member.post("/api/workspace/leave", headers={WS: team["id"]}).status_code == 204
    assert member.get(f"/api/workspaces/{team['id']}").status_code == 404

    assert owner.delete(f"/api/workspaces/{team['id']}").status_code == 204
    assert owner.get(f"/api/workspaces/{team['id']}").status_code == 404
    assert team["id"] not in owner.get("/api/workspaces").text


def test_invites(auth: AuthServer):
    owner = auth.new_user()
    invitee = auth.new_user()
    auth.admin.patch(f"/api/admin/users/{invitee.id}", json={"email": "Invitee@Example.com"})
    stranger = auth.new_user()
    team = _team(auth, owner)
    h = {WS: team["id"]}
    created = owner.post("/api/workspace/invites", json={"email": "invitee@example.com"}, headers=h)
    assert created.status_code == 201 and created.json()["token"]
    assert owner.post("/api/workspace/invites", json={"email": "invitee@example.com"}, headers=h).status_code == 409
    listed = owner.get("/api/workspace/invites", headers=h).json()["invites"]
    assert [i["id"] for i in listed] == [created.json()["id"]] and "token" not in listed[0]
    token = created.json()["token"]
    assert stranger.post(f"/api/invites/{token}/accept").status_code == 403
    assert invitee.post("/api/invites/not-a-token/accept").status_code == 404
    accepted = invitee.post(f"/api/invites/{token}/accept")
    assert accepted.status_code == 200 and accepted.json() == {"workspace_id": team["id"], "workspace_name": "Team"}
    assert invitee.post(f"/api/invites/{token}/accept").status_code == 404  # single use

    # Revoked and expired invites cannot be accepted.
    revoked = owner.post("/api/workspace/invites", json={"username": stranger.username}, headers=h).json()
    assert owner.delete(f"/api/workspace/invites/{revoked['id']}", headers=h).status_code == 204
    assert owner.delete(f"/api/workspace/invites/{revoked['id']}", headers=h).status_code == 404
    assert stranger.post(f"/api/invites/{revoked['token']}/accept").status_code == 404
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expiring = owner.post("/api/workspace/invites", json={"username": stranger.username, "expires_at": soon},
                          headers=h).json()
    time.sleep(1.5)
    assert stranger.post(f"/api/invites/{expiring['token']}/accept").status_code == 404

    # Already a member.
    again = owner.post("/api/workspace/invites", json={"username": invitee.username}, headers=h).json()
    assert invitee.post(f"/api/invites/{again['token']}/accept").status_code == 409


def test_workspace_scoped_keys_and_member_removal(auth: AuthServer):
    owner, member = auth.new_user(), auth.new_user()
    team = _team(auth, owner)
    _join(auth, owner, team["id"], member)
    h = {WS: team["id"]}
    member_key = member.post("/api/workspace/api-keys", json={"name": "m"}, headers=h).json()
    owner_key = owner.post("/api/workspace/api-keys", json={"name": "o"}, headers=h).json()
    as_member = httpx.Client(base_url=auth.url, headers={"X-API-Key": member_key["key"]})
    me = as_member.get("/api/user").json()
    assert me["workspace_id"] == team["id"] and me["role"] == "member"
    # A workspace key cannot be pointed at another workspace.
    assert as_member.get("/api/user", headers={WS: member.workspace_id}).json()["workspace_id"] == team["id"]

    # Owners see every key of the workspace; members only theirs.
    owner_view = {k["id"] for k in owner.get("/api/workspace/api-keys", headers=h).json()["api_keys"]}
    member_view = {k["id"] for k in member.get("/api/workspace/api-keys", headers=h).json()["api_keys"]}
    assert owner_view == {member_key["id"], owner_key["id"]} and member_view == {member_key["id"]}
    assert member.delete(f"/api/workspace/api-keys/{owner_key['id']}", headers=h).status_code == 403
    assert member.request("DELETE", f"/api/workspace/members/{owner.id}/api-keys", headers=h).status_code == 403

    revoked = owner.request("DELETE", f"/api/workspace/members/{member.id}/api-keys", headers=h)
    assert revoked.status_code == 200 and revoked.json() == {"revoked_count": 1}
    assert as_member.get("/api/user").status_code == 401

    second = member.post("/api/workspace/api-keys", json={"name": "m2"}, headers=h).json()
    as_member2 = httpx.Client(base_url=auth.url, headers={"X-API-Key": second["key"]})
    assert as_member2.get("/api/user").status_code == 200
    assert owner.delete(f"/api/workspace/members/{member.id}", headers=h).status_code == 204
    assert as_member2.get("/api/user").status_code == 401
    assert member.get("/api/user", headers=h).status_code == 403
    as_member.close()
    as_member2.close()


def test_role_changes_are_audited(auth: AuthServer):
    owner, member = auth.new_user(), auth.new_user()
    team = _team(auth, owner)
    _join(auth, owner, team["id"], member)
    h = {WS: team["id"]}
    assert owner.patch(f"/api/workspace/members/{member.id}", json={"role": "owner"}, headers=h).status_code == 200
    assert member.get(f"/api/workspaces/{team['id']}").json()["role"] == "owner"
    assert owner.post("/api/workspace/leave", headers=h).status_code == 204  # another owner remains
    events = auth.admin.get("/api/admin/audit", params={"event": "role.change"}).json()["events"]
    assert any(e["user_id"] == member.id and e["detail"].get("role") == "owner" for e in events)


def test_validation(auth: AuthServer):
    user = auth.new_user()
    assert user.post("/api/workspaces", json={}).status_code == 422
    assert user.post("/api/workspaces", json={"name": "x" * 101}).status_code == 422
    assert user.get("/api/workspace/members", params={"limit": "0"}).status_code == 422


def test_a_browser_session_can_switch_workspace(auth: AuthServer):
    owner, member = auth.new_user(), auth.new_user()
    team = _team(auth, owner)
    _join(auth, owner, team["id"], member)
    assert member.request("PUT", "/api/auth/session", json={"workspace_id": team["id"]}).json()["success"] is True
    assert member.get("/api/user").json()["workspace_id"] == team["id"]
    assert member.get("/api/user", headers={WS: member.workspace_id}).json()["workspace_id"] == member.workspace_id
    assert member.request("PUT", "/api/auth/session", json={"workspace_id": owner.workspace_id}).status_code == 404
    key = httpx.Client(base_url=auth.url, headers={"X-API-Key": member.api_key()})
    assert key.put("/api/auth/session", json={"workspace_id": team["id"]}).status_code == 401
    key.close()
    # Removed from the team, the session falls back to the personal workspace.
    owner.delete(f"/api/workspace/members/{member.id}", headers={WS: team["id"]})
    assert member.get("/api/user").json()["workspace_id"] == member.workspace_id
