"""What the plugin does to a ``POST /prompt`` body before the executor sees it.

* Events of a prompt go to the WebSocket whose ``clientId`` the body names;
  a prompt may only name a client id its owner holds (or a fresh one), so
  nobody can push events into, or read them from, another user's socket.
  A prompt without one gets a fresh id instead of the broadcast ComfyUI
  would do.
* The owner's provider secrets reach the nodes through the hidden inputs
  ComfyUI uses for API keys: ``extra_data.api_key_comfy_org`` is filled from
  the caller's own ``comfy_org`` secret unless the client sent one itself.
  The value is taken from the caller's identity only, so no prompt can ever
  receive another user's secret.
* A ``prompt_id`` already used by another owner is replaced by a fresh one,
  since the executor keeps one queue and history row per prompt id.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import bindparam, select, update

from comfy_kernel.execution.store import history_table, queue_table

from .context import MultiUser, identity_of
from .enforcement import client_id_allowed
from .store import hot, new_token, now, user_secrets

_OWNERS = tuple(hot(select(table.c.owner).where(table.c.prompt_id == bindparam("pid")))
                for table in (queue_table, history_table))
_MARK_USED = hot(update(user_secrets).where(user_secrets.c.id == bindparam("id"))
                 .values(last_used_at=bindparam("at")))


def on_prompt(mu: MultiUser, body: dict[str, Any], request: Any) -> dict[str, Any] | None:
    identity = identity_of(request)
    if not identity.authenticated or not isinstance(body, dict):
        return None
    from .secrets import PROVIDER_EXTRA_DATA, read_value

    changed = False
    client_id = body.get("client_id")
    if not isinstance(client_id, str) or not client_id or not client_id_allowed(mu, client_id, identity):
        # Without a client id the executor broadcasts progress and previews to
        # every socket; with someone else's it would send them to that user.
        # Refusing is not an option (the kernel skips a hook that raises), so
        # the events go to a fresh client id that only this owner may claim.
        client_id = "unclaimed-" + new_token(12)
        client_id_allowed(mu, client_id, identity)
        body = {**body, "client_id": client_id}
        changed = True
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and prompt_owner(mu, str(prompt_id)) not in (None, identity.key):
        # Queue and history rows are unique per prompt id: reusing someone else's
        # would replace their entry. The caller gets a fresh id in the answer.
        body = {**body, "prompt_id": str(uuid.uuid4())}
        changed = True
    extra = body.get("extra_data")
    extra = dict(extra) if isinstance(extra, dict) else {}
    for provider, key in PROVIDER_EXTRA_DATA.items():
        if extra.get(key) or not identity.workspace_id:
            continue
        found = read_value(mu, identity.user_id, identity.workspace_id, provider)
        if found is None:
            continue
        secret_id, value = found
        extra[key] = value
        changed = True
        _mark_used(mu, secret_id)
    if not changed:
        return None
    return {**body, "extra_data": extra} if extra or "extra_data" in body else body


def prompt_owner(mu: MultiUser, prompt_id: str) -> str | None:
    """The owner key of a queued, running or finished prompt id, if the executor knows it."""
    executor = getattr(mu.kernel, "executor", None)
    running = getattr(executor, "running", None)
    if isinstance(running, dict) and prompt_id in running:
        return str(getattr(running[prompt_id], "owner", "")) or None
    for stmt in _OWNERS:
        row = mu.store.reads.fetch_one(stmt, {"pid": prompt_id})
        if row is not None:
            return str(row[0])
    return None


def _mark_used(mu: MultiUser, secret_id: str) -> None:
    from .tokens import _touch_later

    _touch_later(mu, _MARK_USED, {"id": secret_id, "at": now()})
