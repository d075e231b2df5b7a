"""Fixtures: real comfy-kernel servers (subprocesses on 127.0.0.1) with this plugin."""

from __future__ import annotations

import pytest

from comfy_kernel.testing import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One single-user server per test module (tests use distinct file names)."""
    with ServerProcess(tmp_path_factory.mktemp("single")) as srv:
        yield srv


@pytest.fixture
def make_server(tmp_path):
    """Factory for servers with their own base directory and flags."""
    started: list[ServerProcess] = []

    def make(*args: str, base=None, env=None) -> ServerProcess:
        srv = ServerProcess(base or (tmp_path / f"base{len(started)}"), *args, env=env).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
        srv.client.close()

