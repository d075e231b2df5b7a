"""Helpers the hub tests share (kept out of conftest so test modules can import them)."""

from __future__ import annotations

from importlib.metadata import entry_points

from comfy_kernel.plugins import ENTRY_POINT_GROUPS


def disable_all_but(*keep: str) -> list[str]:
    """Flags that leave only the named plugins running (faster start, no foreign hooks)."""
    others = sorted({ep.name for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)} - set(keep))
    return ["--disable-plugins", ",".join(others)] if others else []


def headers(user: str) -> dict[str, str]:
    """Identity of a ``--multi-user`` test caller."""
    return {"Comfy-User": user}
