"""Build ``seed_shapes.json``: the request/response shapes of published API specs, without their prose.

The document the server generates (:mod:`.document`) describes a route with
the shapes of the first spec that has the same method and path, so that
clients generated from it match ComfyUI's, ComfyUI-Manager's and the Comfy
cloud contract's types. Only structure is kept: types, properties,
``required``, enums, formats, ``$ref``, parameters and status codes;
descriptions, summaries, examples and tags are dropped (the server's own
docstrings describe its routes).

Usage (specs in priority order; a later spec's schema whose name is taken
by a different schema gets the spec's prefix)::

    python -m comfy_kernel.openapi.extract core=comfyui.yaml Cloud=cloud.yaml Manager=manager.yaml \\
        > kernel/comfy_kernel/openapi/seed_shapes.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

PROSE = {"description", "summary", "example", "examples", "externalDocs", "tags", "title", "deprecated",
         "x-runtime", "x-feature-gate", "x-internal", "security"}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def strip(node: Any, names: bool = False) -> Any:
    """Drop prose keys everywhere; ``names`` marks a map whose keys are data (property names)."""
    if isinstance(node, list):
        return [strip(v) for v in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {key: strip(value) for key, value in node.items()}
    return {key: strip(value, key in ("properties", "patternProperties"))
            for key, value in node.items() if key not in PROSE}


def rewrite_refs(node: Any, renames: dict[str, dict[str, str]]) -> Any:
    if isinstance(node, list):
        return [rewrite_refs(v, renames) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#/components/"):
            _, _, kind, name = value.split("/", 3)
            out[key] = f"#/components/{kind}/{renames.get(kind, {}).get(name, name)}"
        else:
            out[key] = rewrite_refs(value, renames)
    return out


def bare(path: str) -> str:
    return path[4:] if path.startswith("/api/") else path


def merge(specs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {"schemas": {}, "parameters": {}}
    for prefix, spec in specs:
        renames: dict[str, dict[str, str]] = {"schemas": {}, "parameters": {}}
        own = spec.get("components") or {}
        for kind in components:
            for name in own.get(kind) or {}:
                if name in components[kind]:
                    renames[kind][name] = f"{prefix}{name}"
        for kind in components:
            for name, value in (own.get(kind) or {}).items():
                target = renames[kind].get(name, name)
                components[kind][target] = rewrite_refs(strip(value), renames)
        for path, item in (spec.get("paths") or {}).items():
            shared = item.get("parameters") or []
            for method in METHODS:
                op = item.get(method)
                if not isinstance(op, dict):
                    continue
                key = f"{method.upper()} {bare(path)}"
                if key in operations:
                    continue
                kept = {k: op[k] for k in ("operationId", "parameters", "requestBody", "responses",
                                           "x-websocket-messages") if k in op}
                if shared:
                    kept["parameters"] = [*shared, *kept.get("parameters", [])]
                kept = rewrite_refs(strip(kept), renames)
                kept["x-seed"] = prefix
                operations[key] = kept
    return {"operations": dict(sorted(operations.items())), "components": components}


def main(argv: list[str]) -> int:
    specs = []
    for arg in argv:
        prefix, _, path = arg.partition("=")
        with open(path, encoding="utf-8") as f:
            specs.append((prefix if prefix != "core" else "", yaml.safe_load(f)))
    json.dump(merge(specs), sys.stdout, indent=None, separators=(",", ":"), sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
