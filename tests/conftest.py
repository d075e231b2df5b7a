"""Shared fixtures: a real comfy-kernel server process per test (or module)."""

from __future__ import annotations

import pytest

from comfy_kernel.testing import ServerProcess


@pytest.fixture
def server(tmp_path):
    with ServerProcess(tmp_path / "base") as srv:
        yield srv


@pytest.fixture
def make_server(tmp_path):
    """Factory for servers with custom flags: ``make_server("--multi-user")``."""
    started = []

    def make(*args, base=None, **kw):
        srv = ServerProcess(base or (tmp_path / f"base{len(started)}"), *args, **kw).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
        srv.client.close()
