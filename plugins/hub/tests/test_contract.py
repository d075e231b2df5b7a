"""Every workflows/hub operation of the cloud seed, called once, answers what its schema says.

Response bodies are validated against the seed's own component schemas
(OpenAPI 3.0 ``nullable`` turned into JSON Schema), and the test checks that
the operations it called are exactly the seed's 25 (24 of the hub's own and the
assets plugin's ``POST /api/assets/import``, used to import a published asset).
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote

import httpx
import pytest
import yaml
from hub_helpers import disable_all_but, make_user, save_userdata, wait_seed

from comfy_kernel.testing import ServerProcess

SEED = os.path.join(os.path.dirname(__file__), "data", "comfy-cloud-openapi.yaml")
OPERATIONS = re.compile(r"^/api/(workflows|hub/|feedback$|userdata/\{file\}/publish$|assets/import$)")

jsonschema_rs = pytest.importorskip("jsonschema_rs")


def _json_schema(node):
    """OpenAPI 3.0 schema → JSON Schema: ``nullable: true`` becomes a ``null`` alternative."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@pytest.fixture(scope="module")
def seed():
    assert os.path.isfile(SEED), f"test data missing: {SEED}"
    with open(SEED, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def schemas(seed):
    components = _json_schema(seed["components"]["schemas"])

    def validator(name):
        return jsonschema_rs.Draft7Validator({"$ref": f"#/components/schemas/{name}",
                                              "components": {"schemas": components}})

    return validator


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("contract")
    (base / "models" / "loras").mkdir(parents=True)
    (base / "models" / "loras" / "style.safetensors").write_bytes(b"lora bytes")
    args = [*disable_all_but("hub", "userdata", "assets"), "--multi-user"]
    with ServerProcess(base, *args) as srv:
        srv.post("/api/assets/seed", json={"roots": ["models"]})
        wait_seed(srv)
        yield srv


def test_all_operations_answer_their_schema(server, seed, schemas):
    called: set[tuple[str, str]] = set()

    def call(method, template, path, status, schema=None, **kw):
        r = server.request(method, path, **kw)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text[:500]}"
        if schema is not None:
            body = r.json()
            errors = [str(e) for e in schemas(schema).iter_errors(body)] if isinstance(schema, str) else []
            if isinstance(schema, tuple):  # array of a schema
                assert isinstance(body, list) and body
                errors = [str(e) for item in body for e in schemas(schema[0]).iter_errors(item)]
            assert not errors, f"{method} {path} does not match {schema}: {errors[:3]}"
        called.add((method, template))
        return r

    user = make_user(server, "contract")
    other = make_user(server, "other")
    wf = call("POST", "/api/workflows", "/api/workflows", 201, "WorkflowResponse",
              json={"name": "c", "workflow_json": {"nodes": [], "links": []}}, headers=user).json()
    wid = wf["id"]
    call("GET", "/api/workflows", "/api/workflows", 200, "WorkflowListResponse", headers=user)
    call("GET", "/api/workflows/{workflow_id}", f"/api/workflows/{wid}", 200, "WorkflowResponse", headers=user)
    call("PATCH", "/api/workflows/{workflow_id}", f"/api/workflows/{wid}", 200, "WorkflowResponse",
         json={"description": "d"}, headers=user)
    call("POST", "/api/workflows/{workflow_id}/versions", f"/api/workflows/{wid}/versions", 201,
         "WorkflowVersionResponse", json={"base_version": 1, "workflow_json": {"v": 2}}, headers=user)
    conflict = server.post(f"/api/workflows/{wid}/versions", json={"base_version": 1, "workflow_json": {}},
                           headers=user)
    assert conflict.status_code == 409 and not list(schemas("ErrorResponse").iter_errors(conflict.json()))
    call("GET", "/api/workflows/{workflow_id}/content", f"/api/workflows/{wid}/content", 200,
         "WorkflowVersionContentResponse", headers=user)
    fork = call("POST", "/api/workflows/{workflow_id}/fork", f"/api/workflows/{wid}/fork", 201, "WorkflowResponse",
                json={"source_version": 1}, headers=user).json()
    call("DELETE", "/api/workflows/{workflow_id}", f"/api/workflows/{fork['id']}", 204, headers=user)
    missing = server.get(f"/api/workflows/{fork['id']}", headers=user)
    assert missing.status_code == 404 and not list(schemas("ErrorResponse").iter_errors(missing.json()))

    save_userdata(server, user, "workflows/c.json", b'{"nodes": [], "links": []}')
    file_url = "/api/userdata/" + quote("workflows/c.json", safe="") + "/publish"
    call("GET", "/api/userdata/{file}/publish", file_url, 200, "WorkflowPublishInfo", headers=user)
    asset = server.post("/api/assets", files={"file": ("a.png", b"\x89PNGcontract", "image/png")},
                        data={"tags": "input"}, headers=user).json()["id"]
    lora = next(a["id"] for a in server.get("/api/assets", params={"include_tags": "models"}, headers=user)
                .json()["assets"] if a["name"] == "style.safetensors")
    info = call("POST", "/api/userdata/{file}/publish", file_url, 200, "WorkflowPublishInfo",
                json={"asset_ids": [asset, lora]}, headers=user).json()
    published = call("GET", "/api/workflows/published/{share_id}", f"/api/workflows/published/{info['share_id']}",
                     200, "PublishedWorkflowDetail", headers=other).json()
    model = next(a for a in published["assets"] if a["model"])
    # The assets plugin answers its own Asset objects here, without AssetInfo's preview_url,
    # storage_url, model, public and in_library: only the status and the asset are checked.
    imported = call("POST", "/api/assets/import", "/api/assets/import", 200,
                    json={"published_asset_ids": [model["id"]], "share_id": info["share_id"]}, headers=other).json()
    assert imported["assets"][0]["name"] == "style.safetensors"
    # The hub's import route answers AssetInfo-shaped objects.
    call("POST", "/api/workflows/published/{share_id}/import", f"/api/workflows/published/{info['share_id']}/import",
         200, "ImportPublishedAssetsResponse", json={}, headers=other)
    called.discard(("POST", "/api/workflows/published/{share_id}/import"))  # an addition, not a seed operation

    upload = call("POST", "/api/hub/assets/upload-url", "/api/hub/assets/upload-url", 200,
                  "HubAssetUploadUrlResponse", json={"filename": "t.webp", "content_type": "image/webp"},
                  headers=user).json()
    assert httpx.put(upload["upload_url"], content=b"RIFF", headers={"Content-Type": "image/webp"}).status_code == 200
    call("GET", "/api/hub/labels", "/api/hub/labels", 200, "HubLabelListResponse")
    call("GET", "/api/hub/profiles/check", "/api/hub/profiles/check?username=contract", 200,
         "HubUsernameCheckResponse", headers=user)
    call("POST", "/api/hub/profiles", "/api/hub/profiles", 201, "HubProfile",
         json={"workspace_id": "personal", "username": "contract", "avatar_token": upload["token"]}, headers=user)
    call("GET", "/api/hub/profiles/me", "/api/hub/profiles/me", 200, "HubProfile", headers=user)
    call("GET", "/api/hub/profiles/{username}", "/api/hub/profiles/contract", 200, "HubProfile")
    call("PATCH", "/api/hub/profiles/{username}", "/api/hub/profiles/contract", 200, "HubProfile",
         json={"display_name": "Contract"}, headers=user)
    detail = call("POST", "/api/hub/workflows", "/api/hub/workflows", 200, "HubWorkflowDetail",
                  json={"username": "contract", "name": "Contract", "workflow_filename": "workflows/c.json",
                        "asset_ids": [asset], "tags": ["upscaling"], "thumbnail_token_or_url": upload["public_url"]},
                  headers=user).json()
    call("GET", "/api/hub/workflows", "/api/hub/workflows", 200, "HubWorkflowListResponse")
    call("GET", "/api/hub/workflows/{share_id}", f"/api/hub/workflows/{detail['share_id']}", 200,
         "HubWorkflowDetail")
    call("GET", "/api/hub/workflows/index", "/api/hub/workflows/index", 200, ("HubWorkflowTemplateEntry",))
    call("POST", "/api/feedback", "/api/feedback", 201, "FeedbackResponse", json={"type": "general"}, headers=user)
    call("DELETE", "/api/hub/workflows/{share_id}", f"/api/hub/workflows/{detail['share_id']}", 204, headers=user)

    seed_ops = {(method.upper(), path) for path, item in seed["paths"].items() if OPERATIONS.match(path)
                for method in item if method in ("get", "post", "put", "patch", "delete")}
    assert len(seed_ops) == 25
    assert called == seed_ops, (seed_ops - called, called - seed_ops)
