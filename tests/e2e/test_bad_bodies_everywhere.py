"""Every state-changing route of every plugin answers malformed bodies with a 4xx, never a 5xx.

The routes come from the live ``/openapi.json`` of a server with every plugin
loaded, so a route a plugin adds later is probed without editing this test.
Each gets bodies that are not JSON, JSON of the wrong kind, fields of the
wrong types and JSON nested past the depth limit; a page of another origin
(``Origin: null``) gets a 403 everywhere.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from comfy_kernel.http import MAX_JSON_DEPTH

from .integration_helpers import start_server

pytestmark = pytest.mark.slow

#: Routes that act on an empty or ignored body in ways a test server must not see (restart, switch
#: versions, update everything, restore a snapshot) or that read a plain-text package list or URL.
SKIP = re.compile(r"/(reboot|comfyui_switch_version|update_comfyui|update_all|snapshot/restore|"
                  r"install/git_url|install/pip)$")
WRONG_TYPES = {"prompt": 5, "files": 5, "id": [1], "url": {"x": 1}, "name": 7, "ui_id": [], "kind": 3,
               "cnr_id": 5, "value": {"x": [1]}, "tags": "x", "events": 5, "amount_cents": "lots",
               "workflow_json": 5, "user_metadata": [1], "username": 5, "password": 5, "delete": 5}
#: Operations behind a route documented with a ``{operation}`` parameter.
NAMED = [("POST", "/api/billing/topup"), ("POST", "/api/billing/subscribe"), ("POST", "/api/workspace/api-keys")]


def _deep(depth: int) -> bytes:
    return b'{"value": ' + b"[" * depth + b"]" * depth + b"}"


BODIES: list[bytes] = [b"{not json", b"[]", b"5", b'"text"', b"null", b"\xff\xfe", _deep(MAX_JSON_DEPTH + 50)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("bodies")
    srv = start_server(base, "--multi-user", "--billing")
    yield srv
    srv.stop()
    srv.client.close()


@pytest.fixture(scope="module")
def routes(server) -> list[tuple[str, str]]:
    doc = server.get("/openapi.json").json()
    found = []
    for path, operations in doc["paths"].items():
        if SKIP.search(path):
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        found += [(method.upper(), concrete) for method in operations if method in ("post", "put", "patch", "delete")]
    assert len(found) > 60, found  # every plugin's routes, not a server that failed to load them
    return found + NAMED


def _send(server, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
    return server.client.request(method, path, content=body, headers={"Comfy-User": "prober", **headers})


def test_malformed_bodies_are_4xx_everywhere(server, routes):
    failures = []
    for method, path in routes:
        for body in [*BODIES, _json(WRONG_TYPES)]:
            r = _send(server, method, path, body, {"Content-Type": "application/json"})
            if r.status_code >= 500:
                failures.append((method, path, body[:40], r.status_code, r.text[:200]))
    assert not failures, failures
    assert "unhandled error" not in server.log()
    assert server.get("/api/system_stats").status_code == 200


def test_other_origins_are_refused_everywhere(server, routes):
    hostile = {"Origin": "null", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
    answers = {(method, path): _send(server, method, path, b'{"prompt": {}}', hostile).status_code
               for method, path in routes}
    assert {key: status for key, status in answers.items() if status != 403} == {}


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def test_cors_mode_json_routes_refuse_simple_requests(tmp_path):
    """With CORS on, every route documented as taking JSON refuses a ``text/plain`` body from the allowed
    origin (415): a browser sends that without a preflight, so the route would act on an unasked request."""
    app = "http://app.example"
    srv = start_server(tmp_path / "cors", "--billing", "--enable-cors-header", app)
    try:
        doc = srv.get("/openapi.json").json()
        answers = {}
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                kinds = set(operation.get("requestBody", {}).get("content", {}))
                if method in ("post", "put", "patch", "delete") and kinds == {"application/json"} \
                        and not SKIP.search(path):
                    concrete = re.sub(r"\{[^}]+\}", "x", path)
                    r = srv.client.request(method.upper(), concrete, content=b'{"value": 1}',
                                           headers={"Origin": app, "Content-Type": "text/plain"})
                    answers[(method.upper(), concrete)] = r
        for method, path in [(m, p) for m, p in NAMED if p.startswith("/api/billing/")]:
            answers[(method, path)] = srv.client.request(method, path, content=b'{"value": 1}',
                                                         headers={"Origin": app, "Content-Type": "text/plain"})
        assert len(answers) > 30, answers
        # 415, or a refusal that comes first: a missing resource, or the manager v2 API's own JSON rule
        refused_first = {key: r.status_code for key, r in answers.items()
                         if (r.status_code == 404 and "/x" in key[1])
                         or (r.status_code == 400 and "/v2/" in key[1] and "application/json" in r.text)}
        assert {key: r.status_code for key, r in answers.items() if r.status_code != 415
                and key not in refused_first} == {}
        assert len(refused_first) < len(answers) // 4
    finally:
        srv.stop()
        srv.client.close()
