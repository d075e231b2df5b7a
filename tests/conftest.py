"""Shared fixtures: a real comfy-kernel server process per test (or module)."""

from __future__ import annotations

import pytest

from comfy_kernel.testing import ServerProcess

#: Flags that start the kernel alone, whatever plugins the environment has installed.
KERNEL_ONLY = ("--disable-plugins", "core_nodes,userdata,manager,assets,hub,multiuser,compat")


@pytest.fixture
def server(tmp_path):
    with ServerProcess(tmp_path / "base", *KERNEL_ONLY) as srv:
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
