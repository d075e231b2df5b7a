"""Fixtures of the executor's end-to-end tests: one server per test module, one client per test."""

from __future__ import annotations

import pytest

from .execution_helpers import Client, start_server


@pytest.fixture(scope="module")
def exec_server(request, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield server
    server.stop()
    server.client.close()


@pytest.fixture
def client(exec_server):
    c = Client(exec_server)
    yield c
    c.close()
