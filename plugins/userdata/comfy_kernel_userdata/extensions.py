"""``/extensions``: the JavaScript files the frontend imports at boot.

Lists ``.js`` files under the web root's ``extensions/`` (the frontend skips
the ``extensions/core`` ones, which are bundled) and under every extension
web directory the kernel serves at ``/extensions/<name>/`` (node packs'
``WEB_DIRECTORY`` and plugins' ``ck_web_directories``). Sorted, so the
import order is the same on every start.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import json_response
from comfy_kernel.routing import RouteTable


def _js_files(directory: str) -> list[str]:
    out: list[str] = []
    for current, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".js"):
                out.append(os.path.relpath(os.path.join(current, name), directory).replace(os.sep, "/"))
    return out


def extension_urls(web_root: str | None, extension_dirs: dict[str, str]) -> list[str]:
    urls: list[str] = []
    if web_root:
        own = os.path.join(web_root, "extensions")
        if os.path.isdir(own):
            urls.extend("/extensions/" + rel for rel in _js_files(own))
    for name, directory in sorted(extension_dirs.items()):
        if os.path.isdir(directory):
            prefix = "/extensions/" + quote(name) + "/"
            urls.extend(prefix + quote(rel) for rel in _js_files(directory))
    return urls


def register(routes: RouteTable, kernel: Any, web_root: str | None) -> None:
    @routes.get("/extensions")
    async def extensions(request: Request) -> Response:
        return json_response(await run_in_threadpool(extension_urls, web_root, dict(kernel.extension_dirs)))
