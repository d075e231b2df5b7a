"""The OpenAPI 3.1 document of the running server, built from its live route table.

Every route any plugin registered is listed, under a tag named for its
owner (``kernel``, ``hub``, ``assets``, ...). What an operation says comes
from three places, later ones winning:

1. the route itself: path parameters, and the handler's docstring (first
   paragraph → ``summary``, the rest → ``description``);
2. the published specs (``seed_shapes.json``, built by :mod:`.extract` from
   ComfyUI's, ComfyUI-Manager's and the Comfy cloud contract's specs): the
   request and response shapes of the same method and path, so clients
   generated from this document match those APIs' types;
3. what the route declares: ``@routes.get(path, openapi={...})`` takes an
   OpenAPI operation object (``parameters`` merge by name, ``responses`` by
   status code) and may carry ``components`` (``{"schemas": {...}}``) that
   its ``$ref`` s point to. :data:`OVERRIDES` corrects seed shapes where
   the server deliberately answers otherwise.

Routes served both with and without the ``/api`` prefix are listed once, at
their ``/api`` path, with ``x-bare-path`` naming the other.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
import re
from typing import Any

from .. import __version__

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
METHODS_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["type", "message"], "properties": {
        "type": {"type": "string"}, "message": {"type": "string"}, "details": {}}}},
}

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}
_QUEUE_ITEM = {"type": "array", "minItems": 5, "maxItems": 5,
               "description": "[number, prompt_id, prompt, extra_data, outputs_to_execute]"}
_NULLABLE_STRING = {"type": ["string", "null"]}

#: Where the server answers differently from the published shape on purpose (the root README lists
#: each one), or where that shape is not a valid schema.
OVERRIDES: dict[str, dict[str, Any]] = {
    "GET /features": {"responses": {"200": {"content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": True,
        "properties": {"supports_preview_metadata": {"type": "boolean"},
                       "max_upload_size": {"type": "number"}}}}}}}},
    "GET /internal/folder_paths": {"responses": {"200": {"content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}}}}},
    "GET /internal/logs": {"responses": {"200": {"content": {"application/json": {"schema": {"type": "string"}}}}}},
    "GET /internal/logs/raw": {"responses": {"200": {"content": {"application/json": {"schema": {
        "type": "object", "properties": {
            "entries": {"type": "array", "items": {"type": "object", "properties": {
                "t": {"type": "string", "description": "ISO-8601 time"}, "m": {"type": "string"}}}},
            "size": {"type": "object", "properties": {"cols": {"type": ["integer", "null"]},
                                                      "rows": {"type": ["integer", "null"]}}}}}}}}}},
    "PATCH /internal/logs/subscribe": {"responses": {"400": _ERROR}},
    "GET /internal/files/{}": {"responses": {"400": {"content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}}},
    "GET /view": {"responses": {"400": _ERROR, "403": {}, "415": _ERROR}},
    "POST /upload/mask": {"responses": {"404": _ERROR}},
    "GET /queue": {"responses": {"200": {"content": {"application/json": {"schema": {
        "type": "object", "required": ["queue_running", "queue_pending"],
        "properties": {"queue_running": {"type": "array", "items": _QUEUE_ITEM},
                       "queue_pending": {"type": "array", "items": _QUEUE_ITEM}}}}}}}},
    "GET /history_v2/{}": {"responses": {"404": _ERROR}},
    "POST /jobs/{}/cancel": {"responses": {"404": _ERROR}},
    "GET /jobs/{}": {"responses": {"404": _ERROR}},
}

#: Every operation may answer bad input with a 4xx and a JSON body saying what is wrong.
CLIENT_ERROR = {"description": "The request was refused: a JSON body says why (most routes use the `ErrorEnvelope` shape)",
                "content": {"application/json": {"schema": {}}}}

#: The same, for component schemas (merged into the published ones).
COMPONENT_OVERRIDES: dict[str, dict[str, Any]] = {
    "DeviceStats": {"properties": {"index": {"type": ["number", "null"]}}},
    "NodeInfo": {"properties": {"display_name": _NULLABLE_STRING,  # V3 nodes that set none, as in ComfyUI
                                "output_tooltips": {"type": "array", "items": _NULLABLE_STRING}}},
    "SystemStatsResponse": {"properties": {"system": {"properties": {
        name: _NULLABLE_STRING for name in ("comfyui_version", "pytorch_version", "required_frontend_version",
                                            "installed_templates_version", "required_templates_version")}}}},
}


@functools.cache
def seed_shapes() -> dict[str, Any]:
    with open(os.path.join(os.path.dirname(__file__), "seed_shapes.json"), encoding="utf-8") as f:
        data = json.load(f)
    by_shape: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, op in data["operations"].items():
        method, path = key.split(" ", 1)
        by_shape.setdefault(f"{method} {shape(path)}", (path, op))
    data["by_shape"] = by_shape
    return data


def shape(path: str) -> str:
    """A path with its parameter names blanked, for matching ``{id}`` with ``{asset_id}``."""
    return _PARAM.sub("{}", path)


def openapi_path(path: str) -> tuple[str, list[str]]:
    """A Starlette path as an OpenAPI path (``{name:path}`` → ``{name}``) and its parameter names."""
    names = _PARAM.findall(path)
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path), names


def doc_text(handler: Any) -> tuple[str | None, str | None]:
    doc = inspect.getdoc(handler)
    if not doc:
        return None, None
    first, _, rest = doc.partition("\n\n")
    return " ".join(first.split()), (rest.strip() or None)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if key == "parameters" and isinstance(value, list):
            merged: dict[Any, Any] = {}
            for p in [*out.get("parameters", []), *value]:
                merged[p["$ref"] if "$ref" in p else (p.get("name"), p.get("in"))] = p
            out["parameters"] = list(merged.values())
        elif key == "responses" and isinstance(value, dict):
            out["responses"] = {**out.get("responses", {}), **value}
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("schema",):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w and w != "api"]
    return method.lower() + "".join(w[:1].upper() + w[1:] for w in words)


def _rename_path_params(op: dict[str, Any], seed_path: str, names: list[str]) -> dict[str, Any]:
    seed_names = _PARAM.findall(seed_path)
    renames = dict(zip(seed_names, names, strict=False))
    params = []
    for p in op.get("parameters", []):
        if isinstance(p, dict) and p.get("in") == "path" and p.get("name") in renames:
            p = {**p, "name": renames[p["name"]]}
        params.append(p)
    if params:
        op["parameters"] = params
    return op


def _fill_descriptions(op: dict[str, Any]) -> None:
    """OpenAPI requires a description on every response; the seed shapes carry none."""
    responses = op.get("responses", {})
    for status, response in responses.items():
        if isinstance(response, dict) and "$ref" not in response and "description" not in response:
            responses[status] = {"description": _STATUS_TEXT.get(str(status), "Response"), **response}


_STATUS_TEXT = {"200": "OK", "201": "Created", "202": "Accepted", "204": "No Content", "400": "Bad request",
                "401": "Not signed in", "403": "Forbidden", "404": "Not found", "409": "Conflict",
                "413": "Body too large", "415": "Unsupported media type", "422": "Unprocessable",
                "500": "Server error", "503": "Unavailable", "101": "Switching protocols"}


def build(specs: list[Any]) -> dict[str, Any]:
    """The document for these :class:`~comfy_kernel.routing.RouteSpec` s."""
    seeds = seed_shapes()
    paths: dict[str, dict[str, Any]] = {}
    declared_components: dict[str, dict[str, Any]] = {"schemas": {"ErrorEnvelope": ERROR_SCHEMA}}
    used_ids: set[str] = set()
    owners: list[str] = []
    for spec in specs:
        template, names = openapi_path(spec.path)
        mirrored = spec.api_mirror and not spec.api_only
        doc_path = "/api" + template if (spec.api_only or spec.api_mirror) else template
        methods = ["GET"] if spec.websocket else [m for m in spec.methods
                                                    if not (m == "HEAD" and "GET" in spec.methods)]
        summary, description = doc_text(spec.handler)
        declared = copy.deepcopy(getattr(spec, "openapi", None) or {})
        for kind, values in (declared.pop("components", None) or {}).items():
            declared_components.setdefault(kind, {}).update(values)
        for method in methods:
            op: dict[str, Any] = {"tags": [spec.owner]}
            if spec.owner not in owners:
                owners.append(spec.owner)
            if summary:
                op["summary"] = summary
            if description:
                op["description"] = description
            if names:
                op["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                    for n in names]
            found = seeds["by_shape"].get(f"{method} {shape(template)}")
            if found is not None:
                seed_path, seed_op = found
                seed_op = _rename_path_params(copy.deepcopy(seed_op), seed_path, names)
                seed_op.pop("x-seed", None)
                op = deep_merge(op, seed_op)
            override = OVERRIDES.get(f"{method} {shape(template)}")
            if override is not None:
                op = deep_merge(op, override)
            per_method = declared.get(method.lower())
            op = deep_merge(op, per_method if isinstance(per_method, dict) else
                            {k: v for k, v in declared.items() if k.upper() not in METHODS_ORDER})
            if not op.get("responses"):
                op["responses"] = {"101" if spec.websocket else "200": {}}
            if not spec.websocket:
                op["responses"].setdefault("4XX", CLIENT_ERROR)
            op["operationId"] = _unique(op.get("operationId") or _operation_id(method, doc_path), used_ids)
            if mirrored:
                op["x-bare-path"] = template
            if spec.websocket:
                op["x-websocket"] = True
            _fill_descriptions(op)
            paths.setdefault(doc_path, {})[method.lower()] = op
    components = _referenced(paths, seeds["components"], declared_components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "comfy-kernel", "version": __version__, "description": INFO},
        "tags": [{"name": owner} for owner in owners],
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate in used:
        candidate = f"{name}{n}"
        n += 1
    used.add(candidate)
    return candidate


def _referenced(paths: dict[str, Any], seed: dict[str, dict[str, Any]],
                declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Only the components the operations reach (transitively); declared ones win over seed ones."""
    pool = {kind: {**seed.get(kind, {}), **declared.get(kind, {})} for kind in {*seed, *declared}}
    out: dict[str, dict[str, Any]] = {}
    todo = list(_refs(paths))
    while todo:
        kind, name = todo.pop()
        if name in out.get(kind, {}) or name not in pool.get(kind, {}):
            continue
        value = pool[kind][name]
        if kind == "schemas" and name in COMPONENT_OVERRIDES and name not in declared.get(kind, {}):
            value = deep_merge(value, COMPONENT_OVERRIDES[name])
        out.setdefault(kind, {})[name] = value
        todo.extend(_refs(value))
    return {kind: dict(sorted(values.items())) for kind, values in sorted(out.items())}


def _refs(node: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                _, _, kind, name = ref.split("/", 3)
                found.append((kind, name))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


INFO = (
    "The HTTP API of this comfy-kernel server, generated from the routes of the kernel and of every "
    "installed plugin. It speaks ComfyUI's API: each route listed with `x-bare-path` is also served "
    "without the `/api` prefix, and the WebSocket at `/ws` carries the execution messages. Every route acts "
    "for the caller's identity (a user sees only their own queue, history, jobs and webhooks). "
    "For integrators: `POST /api/prompt?wait=SECONDS` answers with the result, "
    "`GET /api/jobs/{job_id}/events` streams a job's messages as server-sent events, and webhooks notify "
    "a URL of a job's events."
)
