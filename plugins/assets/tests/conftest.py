"""Fixtures: one real server (with this plugin discovered) per test module, over HTTP."""

from __future__ import annotations

import os

import httpx
import pytest

from comfy_kernel.testing import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("assets-server")
    with ServerProcess(base) as srv:
        plugins = srv.get("/api/plugins")
        assert plugins.status_code != 200 or "assets" in plugins.text, plugins.text
        yield srv


@pytest.fixture
def make_server(tmp_path):
    started: list[ServerProcess] = []

    def make(*args: str, base=None, **kw) -> ServerProcess:
        srv = ServerProcess(base or (tmp_path / f"base{len(started)}"), *args, **kw).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
        srv.client.close()


def upload(srv: ServerProcess, data: bytes, filename: str = "file.bin", *, user: str | None = None,
           **fields: str) -> httpx.Response:
    headers = {"Comfy-User": user} if user else {}
    return srv.post("/api/assets", files={"file": (filename, data, "application/octet-stream")},
                    data=fields, headers=headers)


def blobs(base: str) -> list[str]:
    root = os.path.join(base, "user", "assets", "blobs")
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
