"""Fixtures: real comfy-kernel servers (subprocesses on 127.0.0.1) running the hub plugin."""

from __future__ import annotations

import os
import sys

import pytest

from comfy_kernel.testing import ServerProcess

# Helper modules (hub_helpers) sit beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hub_helpers import disable_all_but  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One multi-user server with the hub, userdata and assets plugins per test module."""
    args = [*disable_all_but("hub", "userdata", "assets"), "--multi-user"]
    with ServerProcess(tmp_path_factory.mktemp("hub"), *args) as srv:
        yield srv
