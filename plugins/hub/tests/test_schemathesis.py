"""Schemathesis over the seed's workflows and hub operations: no generated request may cause a 5xx."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hub_helpers import disable_all_but

from comfy_kernel.testing import ServerProcess

SEED = os.path.join(os.path.dirname(__file__), "data", "comfy-cloud-openapi.yaml")
HUB_OPS = r"^/api/(workflows|hub/|feedback$|userdata/\{file\}/publish$)"


def _cli() -> str | None:
    exe = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    return exe if os.path.exists(exe) else None


pytestmark = pytest.mark.skipif(_cli() is None, reason="schemathesis is not installed")


def test_no_server_errors(tmp_path):
    assert os.path.isfile(SEED), f"test data missing: {SEED}"
    with ServerProcess(tmp_path / "base", *disable_all_but("hub", "userdata", "assets")) as server:
        cmd = [_cli(), "run", os.path.abspath(SEED), "--url", server.url, "--include-path-regex", HUB_OPS,
               "-n", "10", "--seed", "7", "--checks", "not_a_server_error", "--no-color", "--request-timeout", "60"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=server.base_dir)
        assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:] + server.log()[-3000:]
        # The kernel logs "unhandled error" for every exception that became a 500.
        assert "unhandled error" not in server.log(), server.log()[-4000:]
