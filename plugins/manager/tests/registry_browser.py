"""Headless Chromium whose requests to the Comfy registry are answered inside the browser.

The frontend's Nodes Manager reads packs, versions and node names from
``https://api.comfy.org`` in the browser. This driver (the userdata plugin's
CDP driver plus the DevTools ``Fetch`` domain) pauses every ``https://``
request: those to the registry host get answers built from a small
in-memory registry, every other one fails, as the loopback-only tests
require. The server under test never sees any of it.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import sys
import threading
import urllib.parse
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "userdata", "tests"))

from cdp_browser import Browser, chromium_available  # noqa: E402

__all__ = ["FakeRegistry", "RegistryBrowser", "chromium_available", "registry_pack"]

REGISTRY = "https://api.comfy.org"
CORS = [{"name": "Access-Control-Allow-Origin", "value": "*"},
        {"name": "Access-Control-Allow-Headers", "value": "*"},
        {"name": "Access-Control-Allow-Methods", "value": "GET, POST, OPTIONS"}]


def registry_pack(pack_id: str, version: str, repository: str, nodes: list[str], *,
                  name: str | None = None, description: str = "A test node pack") -> dict[str, Any]:
    """One registry ``Node`` with its latest ``NodeVersion`` (the fields the frontend reads)."""
    latest = {"id": f"{pack_id}-{version}", "node_id": pack_id, "version": version, "changelog": "",
              "status": "NodeVersionStatusActive", "createdAt": "2026-01-01T00:00:00Z", "deprecated": False,
              "dependencies": [], "downloadUrl": "", "supported_os": [], "supported_accelerators": []}
    return {"id": pack_id, "name": name or pack_id, "description": description, "author": "tests",
            "publisher": {"id": "tests", "name": "tests"}, "repository": repository, "license": "MIT",
            "icon": "", "downloads": 1, "rating": 5, "tags": [], "category": "", "status": "NodeStatusActive",
            "latest_version": latest, "supported_os": [], "supported_accelerators": [],
            "created_at": "2026-01-01T00:00:00Z", "comfy_nodes_for_tests": nodes}


class FakeRegistry:
    """The few registry routes the Nodes Manager calls, over a list of packs."""

    def __init__(self, packs: list[dict[str, Any]]):
        self.packs = {p["id"]: p for p in packs}
        self.requests: list[str] = []

    def public(self, pack: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in pack.items() if k != "comfy_nodes_for_tests"}

    def answer(self, method: str, url: str) -> tuple[int, Any]:
        parts = urllib.parse.urlsplit(url)
        path = [urllib.parse.unquote(p) for p in parts.path.strip("/").split("/") if p]
        query = urllib.parse.parse_qs(parts.query)
        self.requests.append(f"{method} {parts.path}?{parts.query}")
        packs = list(self.packs.values())
        if method == "POST" and path == ["bulk", "nodes", "versions"]:
            return 200, {"node_versions": []}
        if path in (["nodes"], ["nodes", "search"]):
            wanted = query.get("node_id")
            found = [p for p in packs if not wanted or p["id"] in wanted]
            text = (query.get("search") or [""])[0].lower()
            found = [p for p in found if not text or text in p["id"].lower() or text in p["name"].lower()]
            return 200, {"nodes": [self.public(p) for p in found], "total": len(found), "page": 1,
                         "limit": 64, "totalPages": 1}
        if len(path) >= 2 and path[0] == "nodes" and path[1] in self.packs:
            pack = self.packs[path[1]]
            if len(path) == 2:
                return 200, self.public(pack)
            if path[2:] == ["versions"]:
                return 200, [pack["latest_version"]]
            if len(path) >= 4 and path[2] == "versions" and path[3] == pack["latest_version"]["version"]:
                if path[4:] == ["comfy-nodes"]:
                    nodes = [{"comfy_node_name": n, "category": "test", "description": "", "input_types": "{}",
                              "return_names": [], "return_types": "[]", "output_is_list": [],
                              "deprecated": False, "experimental": False, "function": "run"}
                             for n in pack["comfy_nodes_for_tests"]]
                    return 200, {"comfy_nodes": nodes, "totalNumberOfPages": 1}
                if len(path) == 4:
                    return 200, pack["latest_version"]
        if len(path) == 3 and path[0] == "comfy-nodes" and path[2] == "node":
            for pack in packs:
                if path[1] in pack["comfy_nodes_for_tests"]:
                    return 200, self.public(pack)
        return 404, {"message": f"not in the test registry: {parts.path}"}


class RegistryBrowser(Browser):
    """:class:`Browser` with the registry answered by ``registry`` and all other https refused."""

    def __init__(self, registry: FakeRegistry, **kw: Any):
        super().__init__(**kw)
        self.registry = registry
        self._paused: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None

    def __enter__(self) -> RegistryBrowser:
        super().__enter__()
        self._worker = threading.Thread(target=self._answer_paused, daemon=True)
        self._worker.start()
        self.call("Network.setBlockedURLs", urls=["http://*:*@*"])
        self.call("Fetch.enable", patterns=[{"urlPattern": "https://*"}, {"urlPattern": "wss://*"}])
        return self

    def __exit__(self, *exc: Any) -> None:
        self._paused.put(None)
        super().__exit__(*exc)

    def _read(self) -> None:
        try:
            for raw in self.ws:
                message = json.loads(raw)
                if message.get("method") == "Fetch.requestPaused":
                    self._paused.put(message["params"])
                    continue
                with self._cond:
                    if "id" in message:
                        self._pending[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._cond.notify_all()
        except Exception:
            pass

    def _answer_paused(self) -> None:
        while True:
            params = self._paused.get()
            if params is None:
                return
            request = params["request"]
            try:
                if not request["url"].startswith(REGISTRY + "/"):
                    self.call("Fetch.failRequest", requestId=params["requestId"], errorReason="BlockedByClient")
                    continue
                if request["method"] == "OPTIONS":
                    self.call("Fetch.fulfillRequest", requestId=params["requestId"], responseCode=204,
                              responseHeaders=CORS, body="")
                    continue
                status, body = self.registry.answer(request["method"], request["url"])
                data = base64.b64encode(json.dumps(body).encode()).decode()
                self.call("Fetch.fulfillRequest", requestId=params["requestId"], responseCode=status,
                          responseHeaders=[*CORS, {"name": "Content-Type", "value": "application/json"}],
                          body=data)
            except Exception:
                continue  # the page went away or the browser is closing
