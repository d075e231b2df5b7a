"""Fixtures: real comfy-kernel servers (subprocesses on 127.0.0.1) with this plugin."""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import entry_points

import pytest

from comfy_kernel.plugins import ENTRY_POINT_GROUPS
from comfy_kernel.testing import ServerProcess

# Test helper modules (the browser driver) sit beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def only_this_plugin() -> list[str]:
    """Flags that disable every other installed plugin: faster start, and no
    other plugin's identity or route hooks change what is tested here."""
    others = sorted({ep.name for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)} - {"userdata"})
    return ["--disable-plugins", ",".join(others)] if others else []


@pytest.fixture(scope="session")
def isolated_args() -> list[str]:
    return only_this_plugin()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One single-user server per test module (tests use distinct file names)."""
    with ServerProcess(tmp_path_factory.mktemp("single"), *only_this_plugin()) as srv:
        yield srv


@pytest.fixture
def make_server(tmp_path):
    """Factory for servers with their own base directory and flags."""
    started: list[ServerProcess] = []

    def make(*args: str, base=None, env=None) -> ServerProcess:
        srv = ServerProcess(base or (tmp_path / f"base{len(started)}"), *only_this_plugin(), *args, env=env).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
        srv.client.close()



@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A --multi-user server whose users.json lists alice_1, bob_2 and a reserved id."""
    base = tmp_path_factory.mktemp("multi")
    (base / "user").mkdir(parents=True)
    users = {"alice_1": "alice", "bob_2": "bob", "__system": "system"}
    (base / "user" / "users.json").write_text(json.dumps(users))
    with ServerProcess(base, *only_this_plugin(), "--multi-user") as srv:
        yield srv
