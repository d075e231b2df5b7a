"""Filesystem seeding and pruning, and prompt outputs becoming assets.

Seeding walks the model folders and the input and output directories and
records each file as a shared asset (owner ``""``) that points at the file in
place: model files are large, so they are hashed but never copied. Hashing
runs on a thread pool; files whose size and mtime match the last scan are not
hashed again, which is what makes a re-seed of a big model library cheap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import blake3
import orjson
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.files.paths import UnsafePath, safe_join
from comfy_kernel.http import HTTPError, json_response, read_json

from .content import hash_file
from .store import PUBLIC
from .validate import fail, guess_mime

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.routing import RouteTable

    from .library import AssetLibrary

log = logging.getLogger(__name__)
ROOTS = ("models", "input", "output")
SKIP_FOLDERS = {"custom_nodes", "configs"}
BATCH = 500
GROUP_FILES = 64
GROUP_BYTES = 8 * 1024 * 1024
BIG_FILE = 64 * 1024 * 1024
WS_EVENT = "assets_seed"


def _hash_group(paths: list[str]) -> list[tuple[str, int] | None]:
    """Hash several files in one pool job; None for a file that could not be read."""
    out: list[tuple[str, int] | None] = []
    for path in paths:
        try:
            big = os.path.getsize(path) >= BIG_FILE
            out.append(hash_file(path, max_threads=blake3.AUTO if big else 1))
        except OSError:
            out.append(None)
    return out


class Seeder:
    """One background scan at a time, with a status object clients can poll."""

    def __init__(self, lib: AssetLibrary):
        self.lib = lib
        self.task: asyncio.Task | None = None
        self.cancel_requested = False
        self.status: dict[str, Any] = {"status": "idle"}
        self.workers = max(2, min(16, os.cpu_count() or 2))
        self._last_sent = 0.0
        self._missing: set[str] = set()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, roots: list[str]) -> bool:
        if self.running:
            return False
        self.cancel_requested = False
        self.status = {"status": "running", "roots": roots, "files_total": 0, "files_scanned": 0,
                       "files_hashed": 0, "files_skipped": 0, "files_failed": 0, "bytes_hashed": 0,
                       "assets_created": 0, "started_at": time.time(), "finished_at": None, "progress": 0.0}
        self.task = self.lib.spawn(self._run(roots))
        return True

    def cancel(self) -> bool:
        if not self.running:
            return False
        self.cancel_requested = True
        return True

    def _files(self, roots: list[str]) -> list[tuple[str, list[str]]]:
        """Every regular file under the chosen roots with the tags it gets."""
        kernel = self.lib.kernel
        found: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        blobs = os.path.realpath(self.lib.root)

        def walk(directory: str, tags: list[str]) -> None:
            for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
                if os.path.realpath(dirpath).startswith(blobs):
                    dirnames[:] = []
                    continue
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for filename in filenames:
                    if filename.startswith("."):
                        continue
                    path = os.path.join(dirpath, filename)
                    if path in seen or not os.path.isfile(path):
                        continue
                    seen.add(path)
                    found.append((path, tags))

        if "models" in roots:
            for name in kernel.folders.names():
                if name in SKIP_FOLDERS:
                    continue
                for directory in kernel.folders.paths(name):
                    if os.path.isdir(directory):
                        walk(directory, ["models", name])
        if "input" in roots and os.path.isdir(kernel.dirs.input):
            walk(kernel.dirs.input, ["input"])
        if "output" in roots and os.path.isdir(kernel.dirs.output):
            walk(kernel.dirs.output, ["output"])
        return found

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_sent >= 0.25:
            self._last_sent = now
            total = self.status.get("files_total") or 0
            self.status["progress"] = (self.status["files_scanned"] / total) if total else 1.0
            self.lib.kernel.ws.send(WS_EVENT, dict(self.status))

    async def _run(self, roots: list[str]) -> None:
        store = self.lib.store
        try:
            t0 = time.perf_counter()
            files = await asyncio.to_thread(self._files, roots)
            self.status["files_total"] = len(files)
            self.status["seconds_listing"] = round(time.perf_counter() - t0, 3)
            known = await store.seen_files()
            rows = await store.seeded_files()
            assets = {r[0]: r[1] for r in rows}
            self._missing = {r[1] for r in rows if r[2]}
            t0 = time.perf_counter()
            todo, revive = await asyncio.to_thread(self._changed, files, known, assets)
            self.status["seconds_comparing"] = round(time.perf_counter() - t0, 3)
            if revive:
                await store.set_missing(revive, False)
            self._report(force=True)
            t0 = time.perf_counter()
            await self._hash_and_record(todo, assets)
            self.status["seconds_hashing"] = round(time.perf_counter() - t0, 3)
            await store.optimize()
            self.status["status"] = "cancelled" if self.cancel_requested else "completed"
        except asyncio.CancelledError:
            self.status["status"] = "cancelled"
            raise
        except Exception as exc:
            log.exception("asset seeding failed")
            self.status["status"] = "failed"
            self.status["error"] = str(exc)
        finally:
            self.status["finished_at"] = time.time()
            self._report(force=True)

    def _changed(self, files: list[tuple[str, list[str]]], known: dict[str, tuple[int, float, str]],
                 assets: dict[str, str]) -> tuple[list[tuple[str, list[str], int, float]], list[str]]:
        """Split files into those to hash and unchanged ones (by size + mtime); runs in a thread."""
        todo: list[tuple[str, list[str], int, float]] = []
        revive: list[str] = []
        for path, tags in files:
            try:
                st = os.stat(path)
            except OSError:
                self.status["files_failed"] += 1
                continue
            prev = known.get(path)
            if prev and prev[0] == st.st_size and prev[1] == st.st_mtime and path in assets:
                self.status["files_skipped"] += 1
                self.status["files_scanned"] += 1
                if assets[path] in self._missing:
                    revive.append(assets[path])
                continue
            todo.append((path, tags, st.st_size, st.st_mtime))
        return todo, revive

    async def _hash_and_record(self, todo: list[tuple[str, list[str], int, float]],
                               assets: dict[str, str]) -> None:
        """Hash ``todo`` on the pool in small groups, recording results in batches.

        Small files are grouped (up to ``GROUP_BYTES`` or ``GROUP_FILES`` a
        job) because one pool job per 16 KiB file costs more in scheduling than
        in hashing; big files go alone and use blake3's own threads.
        """
        loop = asyncio.get_running_loop()
        pending: list[tuple[str, list[str], int, float, str, int]] = []
        groups: list[list[tuple[str, list[str], int, float]]] = []
        group: list[tuple[str, list[str], int, float]] = []
        group_bytes = 0
        for item in todo:
            group.append(item)
            group_bytes += item[2]
            if len(group) >= GROUP_FILES or group_bytes >= GROUP_BYTES:
                groups.append(group)
                group, group_bytes = [], 0
        if group:
            groups.append(group)
        groups.reverse()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="assets-hash") as pool:
            running: dict[asyncio.Future, list[tuple[str, list[str], int, float]]] = {}
            while groups or running:
                while groups and len(running) < self.workers * 2 and not self.cancel_requested:
                    items = groups.pop()
                    running[loop.run_in_executor(pool, _hash_group, [i[0] for i in items])] = items
                if not running:
                    break
                done, _ = await asyncio.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    items = running.pop(fut)
                    for (path, tags, size, mtime), result in zip(items, fut.result(), strict=True):
                        self.status["files_scanned"] += 1
                        if result is None:
                            self.status["files_failed"] += 1
                            continue
                        content_hash, hashed_size = result
                        self.status["files_hashed"] += 1
                        self.status["bytes_hashed"] += hashed_size
                        pending.append((path, tags, size, mtime, content_hash, hashed_size))
                if len(pending) >= BATCH:
                    await self._record(pending, assets)
                    pending = []
                self._report()
        if pending:
            await self._record(pending, assets)

    async def _record(self, batch: list[tuple[str, list[str], int, float, str, int]],
                      assets: dict[str, str]) -> None:
        """Write one batch of hashed files: contents, new or updated assets, seen-file marks."""
        store = self.lib.store
        now = time.time()
        async with store.lock:
            contents, new_assets, new_tags, changed = [], [], [], []
            for path, tags, _, _, content_hash, size in batch:
                contents.append({"hash": content_hash, "size": size, "mime_type": guess_mime(path), "has_blob": 0,
                                 "created_at": now})
                existing = assets.get(path)
                if existing:
                    changed.append({"aid": existing, "new_hash": content_hash, "new_size": size, "now": now})
                    continue
                asset_id = str(uuid.uuid4())
                assets[path] = asset_id
                name = os.path.basename(path)
                new_assets.append({
                    "id": asset_id, "owner": PUBLIC, "name": name, "hash": content_hash, "size": size,
                    "mime_type": guess_mime(path), "user_metadata": orjson.dumps({"filename": name}).decode(),
                    "preview_id": None, "job_id": None, "file_path": path, "source": "seed", "missing": 0,
                    "created_at": now, "updated_at": now, "last_access": now})
                new_tags += [{"asset_id": asset_id, "tag": t, "owner": PUBLIC, "missing": 0} for t in tags]
            seen = [{"path": p, "size": sz, "mtime": mt, "hash": h} for p, _, sz, mt, h, _ in batch]
            await store.record_scan(contents, new_assets, new_tags, changed, seen)
        self.status["assets_created"] += len(new_assets)

    async def prune(self) -> int:
        """Mark shared assets whose backing file is gone; return how many were marked."""
        store = self.lib.store
        rows = [(asset_id, path) for path, asset_id, _ in await store.seeded_files(present_only=True)]
        gone = await asyncio.to_thread(lambda: [(i, p) for i, p in rows if not os.path.isfile(p)])
        if gone:
            await store.forget_files(gone)
        return len(gone)


def register(routes: RouteTable, lib: AssetLibrary) -> None:
    seeder = Seeder(lib)
    lib.seeder = seeder  # type: ignore[attr-defined]

    @routes.post("/assets/seed")
    async def seed(request: Request) -> Response:
        try:
            body = await read_json(request, default={}, object_only=True)
        except HTTPError as exc:
            if exc.type in ("unsupported_media_type", "json_too_deep"):  # the kernel's own answers
                raise
            raise fail(400, "INVALID_JSON", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise fail(400, "INVALID_BODY", "body must be a JSON object")
        roots = body.get("roots")
        if roots is None:
            roots = list(ROOTS)
        if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
            raise fail(400, "INVALID_BODY", "roots must be a list of strings")
        unknown = [r for r in roots if r not in ROOTS]
        if unknown:
            raise fail(400, "INVALID_BODY", f"unknown roots {unknown[:5]}; use {', '.join(ROOTS)}")
        started = seeder.start(list(dict.fromkeys(roots)) or list(ROOTS))
        return json_response({"status": "started" if started else "already_running"})

    @routes.get("/assets/seed/status")
    async def seed_status(request: Request) -> Response:
        return json_response(seeder.status)

    @routes.post("/assets/seed/cancel")
    async def seed_cancel(request: Request) -> Response:
        return json_response({"status": "cancelling" if seeder.cancel() else "idle"})

    @routes.post("/assets/prune")
    async def prune(request: Request) -> Response:
        if seeder.running:
            raise fail(409, "SEED_RUNNING", "a seed scan is running; prune after it finishes")
        return json_response({"status": "completed", "marked": await seeder.prune()})


# --- prompt outputs ------------------------------------------------------------


async def ingest_outputs(lib: AssetLibrary, event: dict[str, Any]) -> int:
    """Record each output file of a finished prompt as an asset of its owner, with its job id."""
    owner = event.get("owner") or "default"
    job_id = str(event.get("prompt_id") or "")
    outputs = event.get("outputs") or {}
    files: list[str] = []
    for node_output in outputs.values() if isinstance(outputs, dict) else []:
        if not isinstance(node_output, dict):
            continue
        for items in node_output.values():
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict) or item.get("type", "output") != "output":
                    continue
                filename, subfolder = item.get("filename"), item.get("subfolder") or ""
                if not isinstance(filename, str) or not isinstance(subfolder, str):
                    continue
                try:
                    path = safe_join(lib.kernel.dirs.output, subfolder, filename)
                except UnsafePath:
                    continue
                if os.path.isfile(path) and path not in files:
                    files.append(path)
    created = 0
    store = lib.store
    for path in files:
        if await store.has_job_file(owner, job_id, path):
            continue
        try:
            content_hash, size = await asyncio.to_thread(hash_file, path)
        except OSError:
            continue
        async with store.lock:
            await store.insert_asset(owner=owner, name=os.path.basename(path), content_hash=content_hash,
                                     size=size, mime_type=guess_mime(path), tags=["output"], user_metadata={},
                                     job_id=job_id or None, file_path=path, source="prompt", record_content=True)
        created += 1
    return created
