"""Helpers for driving node packs through a real comfy-kernel server."""

from __future__ import annotations

import os
import shutil
from importlib.metadata import entry_points
from typing import Any

from comfy_kernel.plugins import ENTRY_POINT_GROUPS
from comfy_kernel.testing import ServerProcess
from tests.e2e.execution_helpers import Client as E2EClient

PACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "packs")


def other_plugins(keep: set[str]) -> list[str]:
    """``--disable-plugins`` flags for every installed plugin not in ``keep`` (faster, isolated)."""
    names = sorted({ep.name for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)} - keep)
    return ["--disable-plugins", ",".join(names)] if names else []


def install_packs(base: Any, *names: str) -> str:
    """Copy packs from ``tests/packs`` into ``<base>/custom_nodes``."""
    target_root = os.path.join(str(base), "custom_nodes")
    os.makedirs(target_root, exist_ok=True)
    for name in names:
        source = os.path.join(PACKS, name)
        target = os.path.join(target_root, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy(source, target)
    return target_root


def start(base: Any, *packs: str, keep: set[str] = frozenset({"compat"}), args: tuple[str, ...] = (),
          env: dict[str, str] | None = None) -> ServerProcess:
    install_packs(base, *packs)
    return ServerProcess(base, *other_plugins(set(keep)), *args, env=env).start()


class Client(E2EClient):
    """The e2e WebSocket client, with the shapes these tests read: message lists and a context manager."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def wait(self, prompt_id: str, timeout: float = 60) -> list[tuple[str, Any]]:  # type: ignore[override]
        """Messages of ``prompt_id`` (and any without a prompt id) until its final ``executing``."""
        return super().wait(prompt_id, timeout).messages

    def run(self, prompt: dict[str, Any], **body: Any) -> tuple[str, list[tuple[str, Any]]]:  # type: ignore[override]
        r = self.queue(prompt, **body)
        assert r.status_code == 200, r.text
        prompt_id = r.json()["prompt_id"]
        return prompt_id, self.wait(prompt_id)


def events(messages: list[tuple[str, Any]], kind: str) -> list[Any]:
    return [d for t, d in messages if t == kind]
