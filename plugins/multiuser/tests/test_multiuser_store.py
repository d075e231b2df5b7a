"""The plugin's tables on both back-ends: migrations, statements, transactions and the blocking reads."""

from __future__ import annotations

import os
import sqlite3
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from comfy_kernel.config import default_config
from comfy_kernel.execution.store import Store as QueueStore
from comfy_kernel.migrations import KERNEL
from comfy_kernel.storage import connect, upgrade
from comfy_kernel.storage.migrations import script_heads
from comfy_kernel.testing import sqlite_schema
from comfy_kernel_multiuser import outputs, plugin, prompts
from comfy_kernel_multiuser.context import MultiUser
from comfy_kernel_multiuser.migrations import MULTIUSER
from comfy_kernel_multiuser.store import Store, now, sessions, signing_keys, users, workspaces
from comfy_kernel_multiuser.tokens import SigningKeys
from comfy_kernel_multiuser.users import create_user

OLD_SCHEMA = os.path.join(os.path.dirname(__file__), "data", "schema_before_migrations.sql")


def test_the_declared_head_is_the_scripts_head():
    assert script_heads([MULTIUSER]) == [MULTIUSER.head]
    assert script_heads([KERNEL, MULTIUSER]) == sorted([KERNEL.head, MULTIUSER.head])  # a branch of its own
    assert plugin.ck_migrations(kernel=None) == [MULTIUSER]


@pytest.fixture
async def mu(database):
    kernel = SimpleNamespace(config=default_config(auth=True), database=database, state={}, route_table=None,
                             executor=None)
    state = MultiUser(kernel)
    await state.store.open()
    yield state
    await state.store.close()


async def test_a_username_is_taken_whatever_its_case(mu):
    alice = await create_user(mu, "alice", None)
    with pytest.raises(ValueError, match="taken"):
        await create_user(mu, "ALICE", None)
    found = await mu.store.user_by_name("Alice")
    assert found is not None and found["id"] == alice and found["username"] == "alice"
    assert await mu.store.user_count() == 1
    # The failed creation was one transaction: no workspace or membership of it is left.
    assert await mu.store.scalar(select(func.count()).select_from(workspaces)) == 1
    assert await mu.store.membership(found["personal_workspace_id"], alice) == "owner"


async def test_blocking_reads_see_what_was_committed(mu):
    admin = await create_user(mu, "root", None, admin=True)
    user = await create_user(mu, "bob", None)
    bob = mu.store.user_sync(user)
    assert bob is not None and bob["is_admin"] == 0 and bob["username"] == "bob"
    assert mu.store.membership_sync(bob["personal_workspace_id"], user) == "owner"
    assert mu.store.membership_sync(bob["personal_workspace_id"], admin) is None
    await mu.store.run(users.update().where(users.c.id == user).values(disabled=1))
    assert mu.store.user_sync(user)["disabled"] == 1

    root_ws = mu.store.user_sync(admin)["personal_workspace_id"]
    assert outputs.node_may_open(mu, f"ws:{root_ws}", "/out/x.png") is False  # no ownership tracker yet
    mu.ownership = outputs.Ownership(mu)
    assert outputs.node_may_open(mu, f"ws:{root_ws}", "/out/x.png")  # an administrator's prompt
    owner = f"ws:{bob['personal_workspace_id']}"
    assert not outputs.node_may_open(mu, owner, "/out/x.png")
    for _ in range(2):  # recorded twice: the second insert is ignored
        await mu.store.run(mu.ownership._record, {"path": "/out/x.png", "owner": owner, "at": now()})
    assert outputs.node_may_open(mu, owner, "/out/x.png") and mu.ownership.recent == {}


async def test_a_prompt_id_belongs_to_whoever_queued_it(mu, database):
    queue = QueueStore(database)
    await queue.open()
    await queue.enqueue("ws:someone", [1, "p-1", {}, {}, []])
    assert prompts.prompt_owner(mu, "p-1") == "ws:someone"
    assert prompts.prompt_owner(mu, "p-unknown") is None


async def test_rotation_keeps_old_keys_verifying_until_their_tokens_expire(mu):
    mu.keys = SigningKeys(mu)
    await mu.keys.load()
    first, _ = await mu.keys.signing_key()
    second = await mu.keys.rotate()
    assert second != first
    rows = {r["kid"]: r for r in await mu.store.all(select(signing_keys))}
    t = now()
    assert rows[first]["sign_until"] <= t < rows[second]["sign_until"]
    assert rows[first]["verify_until"] <= t + mu.keys.max_token_lifetime + 61
    assert isinstance(rows[first]["private_key"], bytes)
    # Another server (a fresh key cache) finds the retired key through the blocking read.
    assert SigningKeys(mu).public_key(first) is not None
    assert SigningKeys(mu).public_key("k-unknown") is None
    events = await mu.audit.events(limit=10, event="signing_key.create")
    assert [e["detail"]["kid"] for e in events] == [second, first]


async def test_audit_events_page_newest_first(mu):
    for n in range(3):
        await mu.audit.record("test.event", user_id=f"u{n}", n=n)
    await mu.audit.record("other.event")
    page = await mu.audit.events(limit=2, offset=0, event="test.event")
    assert [e["detail"]["n"] for e in page] == [2, 1]
    assert [e["detail"]["n"] for e in await mu.audit.events(limit=2, offset=2, event="test.event")] == [0]
    assert (await mu.audit.events(limit=1))[0]["event"] == "other.event"


async def test_expired_credentials_are_forgotten_at_start(mu):
    user = await create_user(mu, "carol", None)
    for token, expires in (("old", now() - 10), ("live", now() + 3600)):
        await mu.store.run(sessions.insert().values(token_hash=token, user_id=user, csrf_token="c", created_at=now(),
                                                    expires_at=expires))
    await plugin._forget_expired(mu)
    assert [r["token_hash"] for r in await mu.store.all(select(sessions.c.token_hash))] == ["live"]


@pytest.mark.sqlite_file
async def test_a_sqlite_file_from_before_migrations_is_adopted(tmp_path):
    old, new = str(tmp_path / "old.db"), str(tmp_path / "new.db")
    conn = sqlite3.connect(old)
    with open(OLD_SCHEMA, encoding="utf-8") as f:
        conn.executescript(f.read())
    conn.execute("INSERT INTO mu_users(id, username, display_name, personal_workspace_id, created_at) "
                 "VALUES ('u-1', 'Dora', 'Dora', 'w-1', 1.0)")
    conn.commit()
    conn.close()
    for path in (old, new):
        db = connect(path)
        await db.open()
        try:
            assert "mu0001" in await upgrade(db, [KERNEL, MULTIUSER])
            if path == old:
                assert (await Store(db).user_by_name("dora"))["id"] == "u-1"
        finally:
            await db.close()
    assert sqlite_schema(old, "mu_") == sqlite_schema(new, "mu_")  # the first revision is the schema the plugin made itself
