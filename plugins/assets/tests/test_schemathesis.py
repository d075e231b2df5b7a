"""Schemathesis over the asset operations of both seed specs: no generated request may cause a 5xx."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from comfy_kernel.testing import ServerProcess

SEEDS = os.path.join(os.path.dirname(__file__), "data")
SPECS = ["comfyui-openapi.yaml", "comfy-cloud-openapi.yaml"]
ASSET_OPS = r"^/api/(assets|tags$|tasks)"


def _cli() -> str | None:
    exe = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    return exe if os.path.exists(exe) else None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_cli() is None, reason="schemathesis is not installed"),
]


@pytest.fixture(scope="module")
def st_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("assets-st") / "base"
    with ServerProcess(base) as server:
        yield server


@pytest.mark.parametrize("spec", SPECS)
def test_no_server_errors(st_server, spec):
    path = os.path.join(SEEDS, spec)
    assert os.path.isfile(path), f"test data missing: {path}"
    st_server.post("/api/assets", files={"file": ("seed.png", b"seed bytes", "image/png")})
    cmd = [_cli(), "run", path, "--url", st_server.url, "--include-path-regex", ASSET_OPS,
           "-n", "15", "--seed", "7", "--checks", "not_a_server_error", "--no-color",
           "--request-timeout", "60"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=st_server.base_dir)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:] + st_server.log()[-3000:]
    assert st_server.get("/api/assets").status_code == 200
    # The kernel logs "unhandled error" for every exception that became a 500.
    assert "unhandled error" not in st_server.log(), st_server.log()[-4000:]
