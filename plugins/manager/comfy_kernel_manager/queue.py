"""The manager's task queue (``/manager/queue/*`` and ``/v2/manager/queue/*``), kept in the kernel's database.

Tasks are rows in ``manager_tasks`` (see ``store``) in the kernel's database, so a
queue filled before a restart (or a reboot through the API) is still there
afterwards; a task that was running when the process died goes back to
pending, and a queue that was processing resumes by itself. Progress goes to
every WebSocket client as ComfyUI-Manager 3 sends it: ``cm-queue-status`` with
``status`` ``in_progress`` per task, ``done`` when the batch ends (with the
per-pack and per-model results) and ``all-done``.

Tasks queued through the Manager 4 API carry a ``ui_id`` and the ``client_id``
of the browser tab that asked; that tab (only) also gets ``cm-task-started``
and ``cm-task-completed`` with the whole queue state (running, pending, this
server run's history, installed packs), which is what the frontend's Nodes
Manager draws. One worker run is a *batch*: its operations, with the
installed packs before and after, are kept in ``manager_batches`` and served
by ``/v2/manager/queue/history_list`` and ``history?id=``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import platform
import time
import uuid
from typing import Any

from comfy_kernel.storage import Database

from .store import QueueStore

log = logging.getLogger(__name__)

# Manager 4 task kinds as the v1 queue names them.
V1_KINDS = {"install_model": "install-model", "update_comfyui": "update-comfyui", "reinstall": "install"}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


def task_view(row_id: int, kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """A row as Manager 4's ``QueueTaskItem`` (v1 rows get a ui_id and their item as params)."""
    if item.get("api") == 2:
        return {"ui_id": item["ui_id"], "client_id": item.get("client_id") or "", "kind": kind,
                "params": item.get("params") or {}}
    return {"ui_id": str(item.get("ui_id") or f"task-{row_id}"), "client_id": str(item.get("client_id") or ""),
            "kind": V1_KINDS.get(kind, kind), "params": item}


def history_view(row_id: int, kind: str, item: dict[str, Any], status: str, result: dict[str, Any] | None,
                 finished: float | None) -> dict[str, Any]:
    """A finished row as Manager 4's ``TaskHistoryItem``."""
    base = task_view(row_id, kind, item)
    result = result or {}
    ok = status == "done"
    msg = str(result.get("msg") or ("done" if ok else "failed"))
    return {**base, "timestamp": iso(finished), "end_time": iso(finished), "result": "success" if ok else msg,
            "status": {"status_str": "success" if ok else "error", "completed": True, "messages": [msg]},
            "batch_id": result.get("batch_id")}


class TaskQueue:
    """Durable FIFO of manager tasks with one worker."""

    def __init__(self, manager: Any, db: Database):
        self.manager = manager
        self.store = QueueStore(db)
        self.worker: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        # Manager 4's history covers this server run only (the frontend forgets it on restart too).
        self.session_start = time.time()

    async def open(self) -> None:
        await self.store.requeue_running()
        if await self.store.meta("processing") == "1" and await self.store.count("pending"):
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

    async def add(self, kind: str, item: dict[str, Any]) -> int:
        return await self.store.add(kind, item)

    async def reset(self) -> None:
        """Drop pending and finished tasks (a running one finishes)."""
        await self.store.reset()

    async def drop_pending(self) -> int:
        """Manager 4's reset: forget the tasks not started yet; history stays."""
        return await self.store.drop_pending()

    async def status(self) -> dict[str, Any]:
        total = await self.store.count("pending", "running", "done", "failed")
        done = await self.store.count("done", "failed")
        running = await self.store.count("running")
        return {"total_count": total, "done_count": done, "in_progress_count": running,
                "is_processing": self.processing}

    async def tasks(self) -> list[dict[str, Any]]:
        return await self.store.tasks()

    # --- the Manager 4 views ------------------------------------------------------

    async def queued(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(running, pending) as ``QueueTaskItem`` lists, in queue order."""
        rows = await self.store.queued()
        running = [task_view(r[0], r[1], r[2]) for r in rows if r[3] == "running"]
        pending = [task_view(r[0], r[1], r[2]) for r in rows if r[3] == "pending"]
        return running, pending

    async def history(self, client_id: str | None = None, ui_id: str | None = None,
                      max_items: int | None = None, offset: int = -1) -> dict[str, dict[str, Any]]:
        """This server run's finished tasks by ui_id, oldest first (Manager 4's paging rules)."""
        rows = await self.store.finished(self.session_start)
        items = [history_view(*r) for r in rows]
        if ui_id is not None:
            items = [h for h in items if h["ui_id"] == ui_id]
        if client_id:
            items = [h for h in items if h["client_id"] == client_id]
        if offset < 0:
            offset = max(len(items) - max_items, 0) if max_items is not None else 0
        items = items[offset:]
        if max_items is not None:
            items = items[:max_items]
        return {h["ui_id"]: h for h in items}

    async def busy_ui_id(self, ui_id: str) -> bool:
        running, pending = await self.queued()
        return any(t["ui_id"] == ui_id for t in running + pending)

    async def status_v2(self, client_id: str | None = None) -> dict[str, Any]:
        running, pending = await self.queued()
        done = await self.history(client_id=client_id)
        if client_id:
            running = [t for t in running if t["client_id"] == client_id]
            pending = [t for t in pending if t["client_id"] == client_id]
        out: dict[str, Any] = {"total_count": len(running) + len(pending), "done_count": len(done),
                               "in_progress_count": len(running), "pending_count": len(pending),
                               "is_processing": bool(running) if client_id else self.processing}
        if client_id:
            out["client_id"] = client_id
        return out

    async def state(self) -> dict[str, Any]:
        """Manager 4's ``TaskStateMessage``."""
        running, pending = await self.queued()
        installed = await asyncio.to_thread(self.manager.installed_v2)
        return {"history": await self.history(), "running_queue": running, "pending_queue": pending,
                "installed_packs": installed}

    async def batch_ids(self) -> list[str]:
        return await self.store.batch_ids()

    async def batch(self, batch_id: str) -> dict[str, Any] | None:
        return await self.store.batch(batch_id)

    # --- the worker ---------------------------------------------------------------

    @property
    def processing(self) -> bool:
        return self.worker is not None and not self.worker.done()

    def start(self) -> bool:
        """Start the worker; False when it is already running."""
        if self.processing:
            return False
        self.worker = asyncio.get_running_loop().create_task(self._run())
        return True

    def send_queue_status(self, data: dict[str, Any]) -> None:
        """Manager 3's ``cm-queue-status`` goes to every client except the Manager 4 frontends
        (they say ``supports_manager_v4_ui`` in their feature flags and do not know this message)."""
        ws = self.manager.kernel.ws
        for sid, client in list(ws.clients.items()):
            if not client.supports("supports_manager_v4_ui"):
                ws.send("cm-queue-status", data, sid=sid)

    async def _send_v2(self, event: str, client_id: str, data: dict[str, Any]) -> None:
        """Manager 4's events go to the tab that queued the task, with the whole queue state."""
        if client_id and client_id in self.manager.kernel.ws.clients:
            self.manager.kernel.ws.send(event, {**data, "state": await self.state()}, sid=client_id)

    async def _system_state(self) -> dict[str, Any]:
        installed = await asyncio.to_thread(self.manager.installed_v2)
        from comfy_kernel import __version__ as kernel_version
        return {"snapshot_time": iso(time.time()), "comfyui_version": {"version": f"comfy-kernel {kernel_version}"},
                "python_version": platform.python_version(), "platform_info": platform.platform(),
                "installed_nodes": installed}

    async def _run(self) -> None:
        """Run batches until the queue is empty.

        The last check for pending tasks is the last ``await``: a task queued
        while a batch finishes is either seen by it or finds the worker gone
        (and ``queue/start`` starts a new one), never stranded.
        """
        while True:
            await self._run_batch()
            if not await self.store.count("pending"):
                return

    async def _run_batch(self) -> None:
        await self.store.set_meta("processing", "1")
        nodepack_result: dict[str, str] = {}
        model_result: dict[str, str] = {}
        batch_id = f"batch_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:8]}"
        batch_start = time.time()
        state_before = await self._system_state()
        operations: list[dict[str, Any]] = []
        while True:
            task = await self.store.take_next()
            if task is None:
                break
            task_id, kind, item = task
            view = task_view(task_id, kind, item)
            started = time.time()
            st = await self.status()
            self.send_queue_status({"status": "in_progress", "target": item.get("ui_id"), "ui_target": kind,
                                    **{k: st[k] for k in ("total_count", "done_count", "in_progress_count")}})
            await self._send_v2("cm-task-started", view["client_id"],
                                {"ui_id": view["ui_id"], "kind": view["kind"], "timestamp": iso(started)})
            try:
                result = await asyncio.to_thread(self.manager.run_task, kind, item)
                status = "done" if result.get("ok", True) else "failed"
            except Exception as exc:  # every failure is reported, none stops the queue
                log.warning("manager task %s %s failed: %s", kind,
                            item.get("id") or item.get("name") or item.get("ui_id"), exc)
                result, status = {"ok": False, "msg": str(exc)}, "failed"
            result = {**result, "batch_id": batch_id}
            target = str(item.get("ui_id") or item.get("id") or item.get("name") or task_id)
            (model_result if kind in ("install_model", "install-model") else nodepack_result)[target] = \
                "success" if status == "done" else result.get("msg", "failed")
            finished = time.time()
            await self.store.finish(task_id, status, result, finished)
            done = history_view(task_id, kind, item, status, result, finished)
            operations.append({"operation_id": view["ui_id"], "operation_type": view["kind"],
                               "target": _target(view), "target_version": _target_version(view),
                               "result": "success" if status == "done" else "failed",
                               "error_message": None if status == "done" else done["result"],
                               "start_time": iso(started), "end_time": iso(finished),
                               "client_id": view["client_id"] or None})
            await self._send_v2("cm-task-completed", view["client_id"],
                                {k: done[k] for k in ("ui_id", "result", "kind", "status", "timestamp")})
        if operations:
            await self._save_batch(batch_id, batch_start, state_before, operations)
        st = await self.status()
        await self.store.set_meta("processing", "0")
        self.send_queue_status({"status": "done", "nodepack_result": nodepack_result, "model_result": model_result,
                                "total_count": st["total_count"], "done_count": st["done_count"]})
        self.send_queue_status({"status": "all-done"})

    async def _save_batch(self, batch_id: str, started: float, state_before: dict[str, Any],
                          operations: list[dict[str, Any]]) -> None:
        finished = time.time()
        ok = sum(1 for op in operations if op["result"] == "success")
        record = {"batch_id": batch_id, "start_time": iso(started), "end_time": iso(finished),
                  "state_before": state_before, "state_after": await self._system_state(),
                  "operations": operations, "total_operations": len(operations),
                  "successful_operations": ok, "failed_operations": len(operations) - ok,
                  "skipped_operations": 0}
        await self.store.save_batch(batch_id, started, finished, record)


def _target(view: dict[str, Any]) -> str:
    params = view["params"]
    for key in ("id", "node_name", "cnr_id", "name", "filename"):
        if params.get(key):
            return str(params[key])
    return view["kind"]


def _target_version(view: dict[str, Any]) -> str | None:
    params = view["params"]
    value = params.get("selected_version") or params.get("version") or params.get("node_ver")
    return str(value) if value else None


# --- routes ------------------------------------------------------------------

#: Fields of a queued pack that name things: text (ids may also be numbers).
TEXT_FIELDS = ("name", "mode", "version", "selected_version", "channel", "install_type", "reference", "title",
               "repository")
ID_FIELDS = ("id", "ui_id", "cnr_id")


def item_error(item: dict[str, Any]) -> str | None:
    """What is wrong with a queue request's pack description, or None (checked before it is queued)."""
    for key in ("files", "pip"):
        value = item.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, str) and v for v in value)):
            return f"{key} must be a list of non-empty strings"
    for key in (*TEXT_FIELDS, *ID_FIELDS):
        value = item.get(key)
        allowed = (str, int) if key in ID_FIELDS else (str,)
        if value is not None and (isinstance(value, bool) or not isinstance(value, allowed)):
            return f"{key} must be a string"
    return None


def add_routes(routes: Any, mgr: Any) -> None:
    """``/manager/queue/*`` in the legacy GET and current POST forms."""
    from .web import body_json, ok_json, text

    def enqueue(kind: str, risk: str) -> Any:
        async def handler(request):
            item = await body_json(request)
            if not item:
                return text("a JSON object describing the node pack is required", 400)
            problem = item_error(item)
            if problem is not None:
                return text(problem, 400)
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
