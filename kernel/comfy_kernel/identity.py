"""Who a request acts for.

Everything user-scoped (history, userdata, assets) is keyed by
:attr:`Identity.key`, so that real authentication is a plugin implementing
``ck_resolve_identity`` rather than a rewrite of every store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Identity:
    """The caller of one request.

    ``user_id`` is the user (``"default"`` in single-user mode);
    ``workspace_id`` the workspace the request acts in (the personal
    workspace unless an auth plugin says otherwise); ``authenticated`` tells
    whether an auth plugin vouched for it (``Comfy-User`` is only a hint).
    """

    user_id: str = "default"
    workspace_id: str | None = None
    authenticated: bool = False
    is_admin: bool = False
    scopes: frozenset[str] = field(default_factory=frozenset)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """The owner key stores use: the workspace if any, else the user."""
        return f"ws:{self.workspace_id}" if self.workspace_id else self.user_id


LOCAL_USER = Identity()
