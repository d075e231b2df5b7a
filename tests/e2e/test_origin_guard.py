"""Pages of other origins cannot make this server act: ``Origin: null``, ``Sec-Fetch-Site`` and JSON bodies.

A sandboxed iframe or a ``data:`` page sends ``Origin: null``; it used to pass
the origin check and could queue prompts (and, with the manager, install
packs). ``null`` is another origin now, a state-changing request a browser
marks ``Sec-Fetch-Site: cross-site`` is refused even without an ``Origin``,
and in CORS mode (where other origins are let through) a JSON route accepts
only a JSON ``Content-Type``, which a browser cannot send without a preflight.
"""

from __future__ import annotations

import json

import pytest

from comfy_kernel.testing import ServerProcess
from tests.conftest import KERNEL_ONLY

PROMPT = {"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}


def _post(server, path, headers, body=PROMPT):
    return server.post(path, content=json.dumps(body), headers=headers)


@pytest.mark.parametrize("headers", [
    {"Origin": "null", "Content-Type": "text/plain"},
    {"Origin": "null", "Content-Type": "application/json"},
    {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
    {"Sec-Fetch-Site": "same-site", "Content-Type": "text/plain"},
    {"Origin": "null", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
])
def test_other_origins_cannot_post(server, headers):
    for path in ("/prompt", "/api/prompt", "/interrupt", "/api/upload/image"):
        r = _post(server, path, headers)
        assert r.status_code == 403, (path, headers, r.text)
        assert r.json()["error"]["type"] == "forbidden_origin"
    assert server.get("/api/queue").json() == {"queue_running": [], "queue_pending": []}


def test_null_origin_websocket_refused(server):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        with server.ws(client_id="x", origin="null") as ws:
            ws.recv(timeout=5)
    assert refused.value.response.status_code == 403
    with server.ws(client_id="y", origin=server.url) as ws:  # the app's own page connects
        assert '"status"' in ws.recv(timeout=5)


def test_same_origin_and_scripts_still_work(server):
    own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin", "Content-Type": "text/plain"}
    # the frontend posts some bodies as text/plain; scripts (urllib) post form types without an Origin
    for headers in (own, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        r = _post(server, "/prompt", headers)
        assert r.status_code == 400 and r.json()["error"]["type"] != "forbidden_origin", r.text
    # a link from another site still opens the app (a GET navigation carries no Origin)
    nav = server.get("/system_stats", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert nav.status_code == 200


def test_cors_mode_requires_json_from_other_origins(tmp_path):
    app = "http://app.example"
    with ServerProcess(tmp_path / "cors", "--enable-cors-header", app, *KERNEL_ONLY) as server:
        simple = _post(server, "/prompt", {"Origin": app, "Content-Type": "text/plain"})
        assert simple.status_code == 415, simple.text
        assert _post(server, "/prompt", {"Origin": app, "Content-Type": "application/x-www-form-urlencoded"}
                     ).status_code == 415
        preflighted = _post(server, "/prompt", {"Origin": app, "Content-Type": "application/json"})
        assert preflighted.status_code == 400 and "forbidden" not in preflighted.text  # reached validation
        assert preflighted.headers["access-control-allow-origin"] == app
        # origins other than the configured one, and null, stay refused
        assert _post(server, "/prompt", {"Origin": "http://evil.example", "Content-Type": "application/json"}
                     ).status_code == 403
        assert _post(server, "/prompt", {"Origin": "null", "Content-Type": "application/json"}).status_code == 403
        # same-origin pages are not affected
        assert _post(server, "/prompt", {"Origin": server.url, "Content-Type": "text/plain"}).status_code == 400
