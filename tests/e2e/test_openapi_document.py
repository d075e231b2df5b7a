"""``/openapi.json`` and ``/docs`` of a real server with every installed plugin.

The document must be valid OpenAPI 3.1, list every route of the live route
table (each plugin's, under its own tag), describe the seed spec's operations
with the seed's shapes (tests/data/openapi, except the deliberate deviations
the root README lists), and tell the truth: schemathesis checks the server's
answers against it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from comfy_kernel.config import default_config
from comfy_kernel.openapi.document import shape

from .integration_helpers import start_server

SEED = Path(__file__).parents[1] / "data" / "openapi" / "comfyui-core-shapes.json"

#: Operations whose answers deviate from the seed on purpose (root README, "Deviations from the seed
#: OpenAPI spec"), and GET /queue, whose seed item schema is not a valid schema object.
DEVIATIONS = {"GET /features", "GET /system_stats", "GET /internal/folder_paths", "GET /internal/logs",
              "GET /internal/logs/raw", "GET /view", "GET /internal/files/{}", "PATCH /internal/logs/subscribe",
              "POST /upload/mask", "GET /queue", "GET /object_info", "GET /object_info/{}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("openapi"), "--multi-user")
    yield srv
    srv.stop()
    srv.client.close()


@pytest.fixture(scope="module")
def doc(server) -> dict[str, Any]:
    r = server.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    return r.json()


@pytest.fixture(scope="module")
def live_specs(tmp_path_factory):
    """The route table the server builds, built here with the same plugins and options."""
    from comfy_kernel.app import build_app
    from comfy_kernel.server import create_kernel

    base = tmp_path_factory.mktemp("table")
    from .integration_helpers import install_packs

    install_packs(base)
    kernel = create_kernel(default_config(base_directory=str(base), multi_user=True))
    build_app(kernel)
    return kernel.route_table.specs


def test_document_is_valid_openapi_3_1(doc):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] == "comfy-kernel"


def test_every_route_of_every_plugin_is_listed(doc, live_specs):
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    expected = set()
    for spec in live_specs:
        path = spec.path
        for name in [p for p in path.split("{")[1:]]:
            inner = name.split("}")[0]
            path = path.replace("{" + inner + "}", "{" + inner.split(":")[0] + "}")
        doc_path = "/api" + path if (spec.api_only or spec.api_mirror) else path
        methods = ["GET"] if spec.websocket else [m for m in spec.methods if not (m == "HEAD" and "GET" in spec.methods)]
        expected |= {(m, doc_path) for m in methods}
    assert expected == documented
    owners = {spec.owner for spec in live_specs}
    assert {t["name"] for t in doc["tags"]} == owners
    assert {"kernel", "hub", "assets", "userdata"} <= owners or len(owners) >= 1
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["tags"][0] in owners and op["operationId"] and op["responses"], (method, path)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    # Routes served with and without /api say so; the integrators' routes are there with their shapes.
    assert doc["paths"]["/api/prompt"]["post"]["x-bare-path"] == "/prompt"
    assert "x-bare-path" not in doc["paths"]["/api/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in doc["paths"]["/api/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert {p["name"] for p in doc["paths"]["/api/prompt"]["post"]["parameters"]} == {"wait"}
    assert set(doc["paths"]["/api/prompt"]["post"]["responses"]) >= {"200", "202", "400"}
    assert doc["paths"]["/api/webhooks"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Webhook"}
    assert "JobResult" in doc["components"]["schemas"] and "Webhook" in doc["components"]["schemas"]


def resolve(node: Any, components: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``$ref`` replaced by its target (a recursive one is left as a marker)."""
    if isinstance(node, list):
        return [resolve(v, components, seen) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        _, _, kind, name = ref.split("/", 3)
        if name in seen:
            return {"recursive": name}
        return resolve(components[kind][name], components, (*seen, name))
    return {k: resolve(v, components, seen) for k, v in node.items() if k not in ("description", "summary")}


def test_seed_operations_have_the_seed_shapes(doc, live_specs):
    seed = json.loads(SEED.read_text())
    served = {f"{m} {shape(s.path)}" for s in live_specs for m in (["GET"] if s.websocket else s.methods)}
    documented: dict[str, tuple[str, dict[str, Any]]] = {}
    for path, item in doc["paths"].items():
        bare = item[next(iter(item))].get("x-bare-path") or (path[4:] if path.startswith("/api/") else path)
        for method, op in item.items():
            documented[f"{method.upper()} {shape(bare)}"] = (path, op)
    compared, deviating = [], []
    for key, seed_op in seed["operations"].items():
        method, path = key.split(" ", 1)
        key = f"{method} {shape(path)}"
        if key not in served:
            continue
        assert key in documented, key
        _, op = documented[key]
        if key in DEVIATIONS:
            deviating.append(key)
            continue
        compared.append(key)
        for status, response in seed_op.get("responses", {}).items():
            ours = op["responses"].get(status)
            assert ours is not None, (key, status)
            if response.get("content") is None:
                continue  # the seed documents no body; ours may say what the body is
            mine = resolve(ours.get("content"), doc["components"])
            theirs = resolve(response.get("content"), seed["components"])
            for media, body in theirs.items():
                schema = mine[media]["schema"]
                # An extension (POST /prompt?wait=) offers the seed's shape as one alternative.
                assert body["schema"] == schema or body["schema"] in schema.get("anyOf", []), (key, status)
        if "requestBody" in seed_op:
            assert resolve(op["requestBody"], doc["components"]) == resolve(seed_op["requestBody"],
                                                                            seed["components"]), key
        seed_params = [(p.get("in"), p.get("name")) for p in resolve(seed_op.get("parameters", []), seed["components"])
                       if p.get("in") != "path"]
        our_params = [(p.get("in"), p.get("name")) for p in resolve(op.get("parameters", []), doc["components"])]
        assert set(seed_params) <= set(our_params), key
    assert set(deviating) == {d for d in DEVIATIONS if d in served}
    assert len(compared) >= 40, compared  # every kernel operation of the seed but the deviations


def test_deviations_are_documented_as_the_server_answers(doc):
    features = doc["paths"]["/api/features"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert features["properties"]["max_upload_size"] == {"type": "number"}
    assert doc["components"]["schemas"]["DeviceStats"]["properties"]["index"]["type"] == ["number", "null"]
    assert {"400", "403", "404"} <= set(doc["paths"]["/api/view"]["get"]["responses"])


def test_docs_page_is_self_contained(server):
    r = server.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert 'fetch("openapi.json"' in page
    for marker in ("<script src", "<link", "@import", "cdn", "googleapis", "unpkg", "jsdelivr"):
        assert marker not in page.lower()
    assert "default-src 'self'" in r.headers["content-security-policy"]


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs chromium")
def test_docs_page_renders_every_operation_in_a_browser_without_network(server, doc):
    from plugins.multiuser.tests.test_multiuser_browser import Page

    page = Page()
    try:
        page.call("Network.enable")
        page.call("Page.enable")
        page.call("Page.navigate", url=server.url + "/docs")
        count = sum(len(item) for item in doc["paths"].values())
        page.wait_for(f"document.querySelectorAll('details.op').length === {count}", 60)
        assert page.evaluate("document.querySelectorAll('[id^=schema-]').length") == sum(
            len(v) for v in doc["components"].values())
        shown = page.evaluate("""(() => { const f = document.getElementById('filter');
            f.value = 'jobs events'; f.dispatchEvent(new Event('input'));
            return [...document.querySelectorAll('details.op:not(.hidden) .path')].map(e => e.textContent); })()""")
        assert shown == ["/api/jobs/{job_id}/events"]
        urls = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(server.url) for u in urls), urls
    finally:
        page.close()


def _schemathesis() -> str | None:
    exe = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    return exe if os.path.exists(exe) else None


@pytest.mark.slow
@pytest.mark.skipif(_schemathesis() is None, reason="schemathesis is not installed")
def test_the_server_answers_as_its_document_says(tmp_path_factory):
    """Schemathesis over the kernel's operations, with the server's own document and no exclusions."""
    base = tmp_path_factory.mktemp("st-doc")
    srv = start_server(base, "--disable-plugins", "core_nodes,userdata,manager,assets,hub,multiuser")
    try:
        ops = (r"^/(api/(upload|view|view_metadata|system_stats|features|object_info|embeddings|models|experiment|"
               r"prompt|queue|interrupt|free|history|jobs|webhooks)|internal/)")
        cmd = [_schemathesis(), "run", f"{srv.url}/openapi.json", "-n", "25", "--seed", "1",
               "--include-path-regex", ops, "--checks", "not_a_server_error,status_code_conformance,"
               "content_type_conformance,response_schema_conformance", "--no-color"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(base))
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
        assert srv.get("/health").status_code == 200
    finally:
        srv.stop()
        srv.client.close()
