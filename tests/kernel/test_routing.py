"""IndexedRouter answers exactly as Starlette's route scan does, only faster for fixed paths."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router

from comfy_kernel.routing import IndexedRouter


def endpoint(name: str):
    async def handler(request):
        return PlainTextResponse(f"{name} {request.method} {dict(request.path_params)}")
    return handler


def routes() -> list:
    inner = Router([Route("/x", endpoint("mounted"))])
    return [
        Route("/api/prompt", endpoint("api-prompt"), methods=["GET", "POST"]),
        Route("/items/{name}", endpoint("item-by-name")),
        Route("/items/special", endpoint("special")),  # shadowed by the route above
        Route("/prompt", endpoint("prompt"), methods=["POST"]),
        Route("/view", endpoint("view")),
        Mount("/static", app=inner),
        Route("/static/x", endpoint("after-mount")),  # shadowed by the mount
        Route("/{path:path}", endpoint("catch-all"), methods=["GET", "POST", "DELETE"]),
    ]


def app(indexed: bool) -> Starlette:
    app = Starlette(routes=routes())
    if indexed:
        app.router = IndexedRouter(routes())
    return app


def call(app, method: str, path: str) -> tuple[int, str, str | None]:
    """One request straight through the ASGI app: (status, body, Allow header)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "root_path": "", "scheme": "http", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    headers = dict(sent[0]["headers"])
    body = b"".join(m.get("body", b"") for m in sent[1:])
    allow = headers.get(b"allow")
    return sent[0]["status"], body.decode(), allow.decode() if allow else None


REQUESTS = [("GET", "/api/prompt"), ("POST", "/api/prompt"), ("DELETE", "/api/prompt"), ("POST", "/prompt"),
            ("GET", "/prompt"), ("HEAD", "/view"), ("GET", "/view"), ("PUT", "/view"), ("GET", "/items/special"),
            ("GET", "/items/a"), ("GET", "/static/x"), ("GET", "/nothing/here"), ("POST", "/view/")]


def test_same_answers_as_the_scan():
    plain, indexed = app(False), app(True)
    for method, path in REQUESTS:
        assert call(plain, method, path) == call(indexed, method, path), (method, path)
    assert call(indexed, "GET", "/items/special")[1].startswith("item-by-name")
    assert call(indexed, "PUT", "/view")[0] == 405


def test_fixed_paths_are_indexed_unless_an_earlier_route_matches():
    router = IndexedRouter(routes())
    router._build_index()
    assert {path for _kind, path in router._index} == {"/api/prompt", "/prompt", "/view"}


def test_routes_added_later_are_found():
    router = IndexedRouter(routes())
    assert call(router, "GET", "/view")[1].startswith("view")
    router.routes.insert(0, Route("/late", endpoint("late")))
    router.routes.insert(0, Route("/{anything}", endpoint("first")))  # now shadows /view
    assert call(router, "GET", "/late")[1].startswith("first")
    assert call(router, "GET", "/view")[1].startswith("first")
