"""The node-pack and model catalog, in ComfyUI-Manager's channel formats.

A channel is a folder (or URL) holding ``custom-node-list.json``,
``extension-node-map.json``, ``model-list.json``, ``alter-list.json`` and
``github-stats.json``. Each channel is parsed once and indexed (by pack id and
by normalised repository URL); ``/customnode/getlist`` then only joins the
index with the installed-state map, so listing the full catalog stays cheap.
The bundled copy in ``data/`` keeps the manager usable offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

BUNDLED_DIR = os.path.join(os.path.dirname(__file__), "data")
CATALOG_FILES = ("custom-node-list.json", "extension-node-map.json", "model-list.json",
                 "alter-list.json", "github-stats.json")
DEFAULT_CHANNEL = "default"


def normalize_url(url: str) -> str:
    """Compare repository URLs by host and path only (no scheme, ``.git`` or trailing slash)."""
    url = (url or "").strip().lower()
    if "://" in url:
        url = url.split("://", 1)[1]
    url = url.rstrip("/")
    if url.endswith(".git"):
        url = url[:-4]
    return url


def repo_name(url: str) -> str:
    """The last path component of a repository or file URL (the folder a clone gets)."""
    path = urllib.parse.urlsplit(url.strip()).path if "://" in url else url.strip()
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name[:-4] if name.endswith(".git") else name


def pack_key(entry: dict[str, Any]) -> str:
    """ComfyUI-Manager keys packs by registry id, else by repository name."""
    if entry.get("id"):
        return str(entry["id"])
    files = entry.get("files") or []
    source = entry.get("reference") or (files[0] if files else "") or entry.get("title", "")
    if entry.get("install_type") == "copy" and files:
        source = files[0]
    name = repo_name(source)
    return name[:-3] if name.endswith(".py") else name


@dataclass
class Channel:
    """One parsed channel: raw lists plus the indexes the routes need."""

    name: str
    source: str
    packs: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_url: dict[str, str] = field(default_factory=dict)
    mappings: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, directory: str) -> Channel:
        def read(fname: str, default: Any) -> Any:
            path = os.path.join(directory, fname)
            if not os.path.isfile(path):
                return default
            with open(path, "rb") as f:
                return json.loads(f.read())

        channel = cls(name, directory)
        nodes = read("custom-node-list.json", {}).get("custom_nodes", [])
        channel.stats = read("github-stats.json", {})
        stats_by_url = {normalize_url(k): v for k, v in channel.stats.items()}
        for entry in nodes:
            if not isinstance(entry, dict):
                continue
            key = pack_key(entry)
            if key in channel.packs:  # same name from two authors: keep both
                key = f"{key}@{entry.get('author', 'unknown')}"
            pack = dict(entry)
            itype = str(pack.get("install_type", "git-clone")).lower()
            pack["install_type"] = "git-clone" if itype in ("git", "git-clone") else itype
            pack.setdefault("id", key)
            stat = stats_by_url.get(normalize_url(pack.get("reference", "")))
            pack["stars"] = stat.get("stars", -1) if stat else -1
            pack["last_update"] = stat.get("last_update", "") if stat else ""
            channel.packs[key] = pack
            for url in [pack.get("reference", "")] + list(pack.get("files") or []):
                if url:
                    channel.by_url.setdefault(normalize_url(url), key)
        channel.mappings = read("extension-node-map.json", {})
        channel.models = [m for m in read("model-list.json", {}).get("models", []) if isinstance(m, dict)]
        channel.alternatives = [a for a in read("alter-list.json", {}).get("items", []) if isinstance(a, dict)]
        log.info("manager catalog %s: %d packs, %d models from %s", name, len(channel.packs),
                 len(channel.models), directory)
        return channel

    def find(self, ident: str) -> dict[str, Any] | None:
        """A pack by id, repository URL or file URL."""
        if ident in self.packs:
            return self.packs[ident]
        key = self.by_url.get(normalize_url(ident))
        return self.packs.get(key) if key else None


class Catalog:
    """Channels by name, each loaded once; remote channels are cached on disk."""

    def __init__(self, cache_dir: str, channels_file: str):
        self.cache_dir = cache_dir
        self.channels_file = channels_file
        self._loaded: dict[str, Channel] = {}
        self._lock = threading.Lock()

    def channel_list(self) -> list[dict[str, str]]:
        """``[{name, url}]``: the bundled default plus ``channels.list`` lines ``name::url``."""
        out = [{"name": DEFAULT_CHANNEL, "url": BUNDLED_DIR}]
        if os.path.isfile(self.channels_file):
            with open(self.channels_file, encoding="utf-8") as f:
                for line in f:
                    if "::" in line:
                        name, url = line.strip().split("::", 1)
                        if name and url and name != DEFAULT_CHANNEL:
                            out.append({"name": name.strip(), "url": url.strip()})
        return out

    def shown_channels(self) -> list[str]:
        """``name::url`` lines for clients; a channel kept in a folder shows as ``local`` (no server paths)."""
        return [f"{c['name']}::{c['url'] if '://' in c['url'] else 'local'}" for c in self.channel_list()]

    def resolve_channel(self, selected: str) -> tuple[str, str]:
        """Accept a channel name or URL; unknown values fall back to the default."""
        for item in self.channel_list():
            if selected in (item["name"], item["url"]):
                return item["name"], item["url"]
        return DEFAULT_CHANNEL, BUNDLED_DIR

    def get(self, selected: str, mode: str) -> Channel:
        """The channel for a request: ``local`` mode always reads the bundled copy."""
        name, url = (DEFAULT_CHANNEL, BUNDLED_DIR) if mode == "local" else self.resolve_channel(selected)
        key = f"{name}|{url}|{'fresh' if mode == 'remote' else 'cached'}"
        with self._lock:
            channel = self._loaded.get(key)
            if channel is None:
                channel = self._load(name, url, refresh=(mode == "remote"))
                self._loaded[key] = channel
            return channel

    def invalidate(self) -> None:
        with self._lock:
            self._loaded.clear()

    def _load(self, name: str, url: str, refresh: bool) -> Channel:
        if url.startswith("file://"):
            url = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        if os.path.isdir(url):
            return Channel.load(name, url)
        if url.startswith(("http://", "https://")):
            directory = os.path.join(self.cache_dir, hashlib.sha256(url.encode()).hexdigest()[:16])
            try:
                if refresh or not os.path.isfile(os.path.join(directory, "custom-node-list.json")):
                    _download_channel(url, directory)
                return Channel.load(name, directory)
            except Exception as exc:  # offline: keep serving the bundled copy
                log.warning("channel %s (%s) unavailable (%s); using the bundled catalog", name, url, exc)
        return Channel.load(DEFAULT_CHANNEL, BUNDLED_DIR)


def _download_channel(url: str, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for fname in CATALOG_FILES:
        target = os.path.join(directory, fname)
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/" + fname, timeout=20) as resp:
                data = resp.read()
            json.loads(data)
        except Exception:
            if fname == "custom-node-list.json":
                raise
            continue
        with open(target + ".tmp", "wb") as f:
            f.write(data)
        os.replace(target + ".tmp", target)


# --- routes ------------------------------------------------------------------


def add_routes(routes: Any, mgr: Any) -> None:
    """Catalog routes: listings joined with the installed state, cached per change."""
    from starlette.responses import Response

    from comfy_kernel.http import dumps

    from .web import ok_json

    cache: dict[str, tuple[Any, bytes]] = {}

    def installed_state(packs: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        by_url, by_name = {}, {}
        for p in packs:
            if p.url:
                by_url[normalize_url(p.url)] = p
            by_name[p.name.lower()] = p
            if p.dist:
                by_name[p.dist.lower()] = p
        return by_url, by_name

    def state_of(pack: dict[str, Any], by_url: dict, by_name: dict, records: dict) -> tuple[str, Any]:
        found = None
        for url in [pack.get("reference", "")] + list(pack.get("files") or []):
            found = by_url.get(normalize_url(url)) if url else None
            if found:
                break
        if found is None:
            files = pack.get("files") or []
            names = [str(pack.get("id", "")).lower()]
            if files:
                names.append(repo_name(files[0]).lower().removesuffix(".py"))
            found = next((by_name[n] for n in names if n in by_name), None)
        if found is None:
            return "not-installed", None
        if not found.enabled:
            return "disabled", found
        record = records.get(found.name)
        if record is not None and record.status == "failed":
            return "import-fail", found
        return "enabled", found

    @routes.get("/customnode/getlist")
    async def getlist(request):
        channel = mgr.channel(request.query_params.get("mode"))
        packs_dir = mgr.packs.custom_nodes
        stamp = (id(channel), mgr.packs.version, _mtime(packs_dir), _mtime(os.path.join(packs_dir, ".disabled")),
                 len(mgr.kernel.host.records))
        hit = cache.get("getlist")
        if hit is None or hit[0] != stamp:
            installed = mgr.packs.installed(commits=False)
            by_url, by_name = installed_state(installed)
            records = mgr.kernel.host.records
            node_packs = {}
            for key, pack in channel.packs.items():
                state, found = state_of(pack, by_url, by_name, records)
                node_packs[key] = {**pack, "state": state,
                                   "updatable": bool(found and mgr.packs.behind.get(found.name)),
                                   "version": (found.version or "nightly") if found else "unknown",
                                   "installed": "True" if found else "False"}
            hit = (stamp, dumps({"channel": channel.name, "node_packs": node_packs}))
            cache["getlist"] = hit
        return Response(hit[1], media_type="application/json")

    @routes.get("/customnode/getmappings")
    async def getmappings(request):
        channel = mgr.channel(request.query_params.get("mode"))
        return ok_json(channel.mappings)

    @routes.get("/customnode/alternatives")
    async def alternatives(request):
        channel = mgr.channel(request.query_params.get("mode"))
        out = {}
        for item in channel.alternatives:
            pack = channel.find(str(item.get("id", "")))
            out[str(item.get("id"))] = {**(pack or {}), **item}
        return ok_json(out)

    @routes.get("/customnode/versions/{node_name}")
    async def versions(request):
        name = request.path_params["node_name"]
        pack = mgr.channel().find(name)
        inst = mgr.packs.find({"id": name})
        if pack is None and inst is None:
            return ok_json({"error": f"unknown node pack {name!r}"}, 400)
        out = []
        if inst is not None and inst.version:
            out.append({"version": inst.version})
        if pack is not None or (inst is not None and inst.kind == "git"):
            out.append({"version": "nightly"})
        return ok_json(out)

    @routes.get("/customnode/disabled_versions/{node_name}")
    async def disabled_versions(request):
        name = request.path_params["node_name"]
        inst = mgr.packs.find({"id": name})
        if inst is None or inst.enabled:
            return ok_json({"error": f"no disabled version of {name!r}"}, 400)
        return ok_json([{"version": inst.version or "nightly"}])

    @routes.get("/customnode/installed")
    async def installed(request):
        if request.query_params.get("mode") == "imported":
            return ok_json(mgr.packs.imported_at_start)
        return ok_json({p.name: p.info() for p in mgr.packs.installed(commits=False)})

    @routes.route(["GET", "POST"], "/customnode/fetch_updates")
    async def fetch_updates(request):
        import asyncio

        try:
            result = await asyncio.to_thread(mgr.packs.updatable)
        except Exception as exc:
            return ok_json({"error": str(exc)}, 400)
        behind = sorted(name for name, flag in result.items() if flag)
        return ok_json({"updatable": behind}, 201 if behind else 200)

    @routes.get("/externalmodel/getlist")
    async def externalmodel_getlist(request):
        channel = mgr.channel(request.query_params.get("mode"))
        models = []
        for m in channel.models:
            models.append({**m, "installed": "True" if mgr.models.installed(m) else "False"})
        return ok_json({"models": models})



def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1
