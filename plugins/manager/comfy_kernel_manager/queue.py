"""The manager's task queue (``/manager/queue/*``), kept in SQLite.

Tasks are rows in ``manager_tasks`` in the kernel's shared database, so a
queue filled before a restart (or a reboot through the API) is still there
afterwards; a task that was running when the process died goes back to
pending, and a queue that was processing resumes by itself. Progress goes to
every WebSocket client as ComfyUI-Manager sends it: ``cm-queue-status`` with
``status`` ``in_progress`` per task, ``done`` when the batch ends (with the
per-pack and per-model results) and ``all-done``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS manager_tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    result TEXT,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS manager_meta (key TEXT PRIMARY KEY, value TEXT);
"""


class TaskQueue:
    """Durable FIFO of manager tasks with one worker."""

    def __init__(self, manager: Any, db_path: str):
        self.manager = manager
        self.db_path = db_path
        self.db: aiosqlite.Connection | None = None
        self.worker: asyncio.Task | None = None
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.db_path, timeout=30)
        await self.db.executescript(SCHEMA)
        await self.db.execute("UPDATE manager_tasks SET status='pending' WHERE status='running'")
        await self.db.commit()
        if await self._meta("processing") == "1" and await self._count("pending"):
            log.info("manager: resuming the task queue after a restart")
            self.start()

    async def close(self) -> None:
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()
            try:
                await self.worker
            except (asyncio.CancelledError, Exception):
                pass
            # the interrupted task runs again next time; keep the queue marked as processing
        if self.db is not None:
            await self.db.close()
            self.db = None

    async def _meta(self, key: str) -> str | None:
        assert self.db is not None
        async with self.db.execute("SELECT value FROM manager_meta WHERE key=?", (key,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def _set_meta(self, key: str, value: str) -> None:
        assert self.db is not None
        await self.db.execute("INSERT OR REPLACE INTO manager_meta(key, value) VALUES (?, ?)", (key, value))
        await self.db.commit()

    async def _count(self, *statuses: str) -> int:
        assert self.db is not None
        marks = ",".join("?" * len(statuses))
        async with self.db.execute(f"SELECT COUNT(*) FROM manager_tasks WHERE status IN ({marks})", statuses) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def add(self, kind: str, item: dict[str, Any]) -> int:
        assert self.db is not None
        cur = await self.db.execute("INSERT INTO manager_tasks(kind, item, created) VALUES (?, ?, ?)",
                                    (kind, json.dumps(item), time.time()))
        await self.db.commit()
        return int(cur.lastrowid or 0)

    async def reset(self) -> None:
        """Drop pending and finished tasks (a running one finishes)."""
        assert self.db is not None
        await self.db.execute("DELETE FROM manager_tasks WHERE status != 'running'")
        await self.db.commit()

    async def status(self) -> dict[str, Any]:
        total = await self._count("pending", "running", "done", "failed")
        done = await self._count("done", "failed")
        running = await self._count("running")
        return {"total_count": total, "done_count": done, "in_progress_count": running,
                "is_processing": self.processing}

    async def tasks(self) -> list[dict[str, Any]]:
        assert self.db is not None
        async with self.db.execute("SELECT id, kind, item, status, result FROM manager_tasks ORDER BY id") as cur:
            rows = await cur.fetchall()
        return [{"id": r[0], "kind": r[1], "item": json.loads(r[2]), "status": r[3],
                 "result": json.loads(r[4]) if r[4] else None} for r in rows]

    @property
    def processing(self) -> bool:
        return self.worker is not None and not self.worker.done()

    def start(self) -> bool:
        """Start the worker; False when it is already running."""
        if self.processing:
            return False
        self.worker = asyncio.get_running_loop().create_task(self._run())
        return True

    async def _next(self) -> tuple[int, str, dict[str, Any]] | None:
        assert self.db is not None
        async with self.db.execute(
                "SELECT id, kind, item FROM manager_tasks WHERE status='pending' ORDER BY id LIMIT 1") as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        await self.db.execute("UPDATE manager_tasks SET status='running' WHERE id=?", (row[0],))
        await self.db.commit()
        return row[0], row[1], json.loads(row[2])

    async def _run(self) -> None:
        assert self.db is not None
        await self._set_meta("processing", "1")
        ws = self.manager.kernel.ws
        nodepack_result: dict[str, str] = {}
        model_result: dict[str, str] = {}
        while True:
            task = await self._next()
            if task is None:
                break
            task_id, kind, item = task
            st = await self.status()
            ws.send("cm-queue-status", {"status": "in_progress", "target": item.get("ui_id"), "ui_target": kind,
                                        **{k: st[k] for k in ("total_count", "done_count", "in_progress_count")}})
            try:
                result = await asyncio.to_thread(self.manager.run_task, kind, item)
                status = "done" if result.get("ok", True) else "failed"
            except Exception as exc:  # every failure is reported, none stops the queue
                log.warning("manager task %s %s failed: %s", kind, item.get("id") or item.get("name"), exc)
                result, status = {"ok": False, "msg": str(exc)}, "failed"
            target = str(item.get("ui_id") or item.get("id") or item.get("name") or task_id)
            (model_result if kind == "install_model" else nodepack_result)[target] = \
                "success" if status == "done" else result.get("msg", "failed")
            await self.db.execute("UPDATE manager_tasks SET status=?, result=?, finished=? WHERE id=?",
                                  (status, json.dumps(result, default=str), time.time(), task_id))
            await self.db.commit()
        await self._set_meta("processing", "0")
        st = await self.status()
        ws.send("cm-queue-status", {"status": "done", "nodepack_result": nodepack_result,
                                    "model_result": model_result, "total_count": st["total_count"],
                                    "done_count": st["done_count"]})
        ws.send("cm-queue-status", {"status": "all-done"})


# --- routes ------------------------------------------------------------------


def add_routes(routes: Any, mgr: Any) -> None:
    """``/manager/queue/*`` in the legacy GET and current POST forms."""
    from .web import body_json, ok_json, text

    def enqueue(kind: str, risk: str) -> Any:
        async def handler(request):
            item = await body_json(request)
            if not item:
                return text("a JSON object describing the node pack is required", 400)
            level = risk
            channel = mgr.channel(item.get("mode"))
            pack = channel.find(str(item.get("id"))) if item.get("id") else None
            if pack is None:
                pack = next((p for p in map(channel.find, item.get("files") or []) if p), None)
            if pack is not None:
                # the catalog's sources win over whatever the request says about a catalog pack
                item = {**item, "files": pack.get("files"), "install_type": pack.get("install_type"),
                        "reference": pack.get("reference"), **({"pip": pack["pip"]} if pack.get("pip") else {})}
            elif kind in ("install", "reinstall"):
                level = "high"  # not from the catalog: an arbitrary URL or requirement
            refused = mgr.guard.check(request, kind, level)
            if refused is not None:
                return refused
            task_id = await mgr.queue.add(kind, item)
            return ok_json({"queued": task_id})
        return handler

    for kind, risk in (("install", "middle"), ("reinstall", "middle"), ("uninstall", "middle"),
                       ("update", "middle"), ("fix", "middle"), ("disable", "low"), ("enable", "low")):
        routes.add("POST", f"/manager/queue/{kind}", enqueue(kind, risk))

    @routes.route(["GET", "POST"], "/manager/queue/update_all")
    async def update_all(request):
        refused = mgr.guard.check(request, "update all", "middle")
        if refused is not None:
            return refused
        if mgr.queue.processing:
            return text("the queue is already processing", 401)
        count = 0
        for pack in mgr.packs.installed(commits=False):
            if pack.enabled and pack.kind in ("git", "pip"):
                await mgr.queue.add("update", {"id": pack.name, "ui_id": pack.name})
                count += 1
        return ok_json({"queued": count})

    @routes.route(["GET", "POST"], "/manager/queue/update_comfyui")
    async def update_comfyui(request):
        refused = mgr.guard.check(request, "update comfyui", "middle")
        if refused is not None:
            return refused
        return ok_json({"queued": await mgr.queue.add("update_comfyui", {"ui_id": "comfyui"})})

    @routes.route(["GET", "POST"], "/manager/queue/reset")
    async def reset(request):
        refused = mgr.guard.check(request, "reset queue", "low")
        if refused is not None:
            return refused
        await mgr.queue.reset()
        return text("")

    @routes.route(["GET", "POST"], "/manager/queue/start")
    async def start(request):
        refused = mgr.guard.check(request, "start queue", "low")
        if refused is not None:
            return refused
        return text("", 200 if mgr.queue.start() else 201)

    @routes.get("/manager/queue/status")
    async def status(request):
        return ok_json(await mgr.queue.status())

    @routes.get("/manager/queue/tasks")
    async def tasks(request):
        return ok_json(await mgr.queue.tasks())
