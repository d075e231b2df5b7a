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


def make_user(server, name: str) -> dict[str, str]:
    """A ``--multi-user`` user known to the userdata plugin; returns its request headers."""
    r = server.post("/users", json={"username": name})
    assert r.status_code == 200, r.text
    return headers(r.json())


def save_userdata(server, user: dict[str, str], path: str, content: bytes) -> None:
    from urllib.parse import quote

    r = server.post("/api/userdata/" + quote(path, safe=""), content=content, headers=user)
    assert r.status_code == 200, r.text


def wait_seed(server, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.get("/api/assets/seed/status").json()["status"] != "running":
            return
        time.sleep(0.05)
    raise AssertionError("asset seeding did not finish")
