"""Building the OpenAPI document from route specs: declared schemas, seed shapes, merging and names."""

from __future__ import annotations

from comfy_kernel.openapi.document import build, deep_merge, openapi_path, shape
from comfy_kernel.routing import RouteTable


async def _handler(request):
    """Do a thing.

    At length."""


def test_paths_and_shapes():
    assert openapi_path("/files/{name:path}/x/{id}") == ("/files/{name}/x/{id}", ["name", "id"])
    assert shape("/assets/{asset_id}/tags") == shape("/assets/{id}/tags") == "/assets/{}/tags"


def test_merging_parameters_and_responses():
    base = {"parameters": [{"$ref": "#/components/parameters/A"}, {"name": "x", "in": "query", "schema": {}}],
            "responses": {"200": {"description": "a"}, "404": {}}}
    extra = {"parameters": [{"name": "x", "in": "query", "required": True}, {"name": "y", "in": "header"}],
             "responses": {"200": {"description": "b"}}}
    merged = deep_merge(base, extra)
    assert merged["parameters"] == [{"$ref": "#/components/parameters/A"}, {"name": "x", "in": "query",
                                                                            "required": True},
                                    {"name": "y", "in": "header"}]
    assert merged["responses"] == {"200": {"description": "b"}, "404": {}}


def test_declared_routes_seed_routes_and_generated_ones():
    table = RouteTable(owner="demo")
    table.get("/demo/{item_id}", openapi={
        "responses": {"200": {"description": "An item", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/DemoItem"}}}}},
        "components": {"schemas": {"DemoItem": {"type": "object", "properties": {"id": {"type": "string"}}}}}})(_handler)
    table.post("/prompt")(_handler)
    table.get("/internal/thing", api_mirror=False)(_handler)
    table.websocket("/ws")(_handler)
    doc = build(table.specs)
    demo = doc["paths"]["/api/demo/{item_id}"]["get"]
    assert demo["summary"] == "Do a thing." and demo["description"] == "At length."
    assert demo["tags"] == ["demo"] and demo["x-bare-path"] == "/demo/{item_id}"
    assert demo["parameters"] == [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    assert "DemoItem" in doc["components"]["schemas"] and "4XX" in demo["responses"]
    prompt = doc["paths"]["/api/prompt"]["post"]
    assert prompt["operationId"] == "executePrompt"  # from the seed
    assert prompt["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PromptRequest"}
    assert {"PromptRequest", "PromptResponse", "PromptErrorResponse"} <= set(doc["components"]["schemas"])
    assert doc["paths"]["/internal/thing"]["get"]["operationId"] == "getInternalThing"
    assert "x-bare-path" not in doc["paths"]["/internal/thing"]["get"]
    ws = doc["paths"]["/api/ws"]["get"]
    assert ws["x-websocket"] is True and "101" in ws["responses"] and ws.get("x-websocket-messages")
    # Only what is reachable is in components, and every $ref resolves.
    import json

    text = json.dumps(doc)
    for kind, names in doc["components"].items():
        for name in names:
            assert f"#/components/{kind}/{name}" in text
