"""Schemathesis over the contract's billing operations and the last three cloud operations.

A real ``--auth --billing`` server; requests carry the signed-in owner's API
key. No generated request may cause a 5xx, and every answer must match the
contract (status code, content type, body schema). ``GET /api/vhs/queryvideo``
answers 404 for a file that does not exist, which the contract does not list
(it documents placeholder values for any name); its bodies are still checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import billing_helpers as h
import pytest

SPEC = os.path.join(h.DATA, "cloud-billing-openapi.yaml")
ALL_OPS = r"^/api/(billing/|job/|files/mask-layers|vhs/queryvideo)"
STRICT_OPS = r"^/api/(billing/|job/|files/mask-layers)"


def _cli() -> str | None:
    exe = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    return exe if os.path.exists(exe) else None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_cli() is None, reason="schemathesis is not installed"),
              h.needs_multiuser]


@pytest.fixture(scope="module")
def st_server(tmp_path_factory):
    base = h.prepare_base(tmp_path_factory.mktemp("billing-st") / "base")
    h.create_admin(base)
    server = h.auth_server(base)
    owner = h.User(server.url, *h.ADMIN)
    key = owner.api_key()
    # Something to find: a pending top-up and a finished job.
    owner.post("/api/billing/topup", json={"amount_cents": 700})
    pid = owner.queue(h.workflow(1, 0.0)).json()["prompt_id"]
    owner.wait(pid)
    try:
        yield server, key
    finally:
        owner.close()
        server.stop()
        server.client.close()


def _run(server, key: str, include: str, checks: str, mode: str, extra: list[str] = ()) -> subprocess.CompletedProcess:
    cmd = [_cli(), "run", SPEC, "--url", server.url, "--include-path-regex", include, "-H", f"X-API-Key: {key}",
           "-n", "15", "--seed", "3", "--mode", mode, "--checks", checks, "--no-color", "--request-timeout", "60",
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=server.base_dir)


def test_no_server_errors(st_server):
    server, key = st_server
    out = _run(server, key, ALL_OPS, "not_a_server_error", "all")
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:] + server.log()[-3000:]
    assert "unhandled error" not in server.log(), server.log()[-4000:]


def test_answers_match_the_contract(st_server):
    server, key = st_server
    checks = "status_code_conformance,content_type_conformance,response_schema_conformance"
    out = _run(server, key, STRICT_OPS, checks, "positive")
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    out = _run(server, key, r"^/api/vhs/queryvideo", "content_type_conformance,response_schema_conformance",
               "positive")
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
