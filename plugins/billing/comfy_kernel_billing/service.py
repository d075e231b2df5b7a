"""The running billing state of one server (``kernel.state["billing"]``).

It holds the plan file, the database thread, a cache of account rows (plan,
buckets, period) that ``/prompt`` decides on without touching the database,
and the payment provider. The kernel's hooks call in here:

* ``ck_admit_prompt`` -> :meth:`Billing.admit`: refuse a prompt without an
  active plan or credit (402), over the plan's queue length (429) or over its
  resolution/batch limits (403 with ``node_errors``); stamp the admitted one
  with a run id, its user and workspace (``extra_data["billing"]``, stored
  with the queue item, so a prompt re-run after a crash keeps its run id and
  is charged once).
* ``ck_prompt_may_start`` -> :meth:`Billing.may_start`: the plan's
  ``max_concurrent``.
* ``ck_prompt_finished`` -> :meth:`Billing.finished`: meter and charge.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import sqlite3
import threading
import time
import uuid
from typing import Any

import orjson

from comfy_kernel.http import HTTPError

from . import ledger, limits
from .config import MICROS, Settings
from .metering import STAMP, busy_seconds, crashed, models_used, node_figures, output_figures, status_of
from .providers import Answer, ManualProvider, PaymentProvider
from .store import Database

log = logging.getLogger(__name__)


def refuse(status: int, kind: str, message: str, details: str, extra: dict[str, Any] | None = None,
           node_errors: dict[str, Any] | None = None) -> HTTPError:
    """A ``/prompt`` refusal in ComfyUI's error shape (what the frontend shows)."""
    return HTTPError(status, message, type=kind, body={
        "error": {"type": kind, "message": message, "details": details, "extra_info": extra or {}},
        "node_errors": node_errors or {}})


def fail(status: int, code: str, message: str) -> HTTPError:
    """An error of the billing routes in the seed's ``ErrorResponse`` shape."""
    return HTTPError(status, message, type=code, body={"code": code, "message": message})


async def resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class KernelTables:
    """Read-only look-ups in the kernel's database: workspace members and kinds, history after a crash.

    Used only on the billing database's thread.
    """

    def __init__(self, path: str):
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA busy_timeout=5000")
        return self._conn

    def seats(self, account: str) -> int:
        if not account.startswith("ws:"):
            return 1
        try:
            row = self.conn().execute("SELECT COUNT(*) FROM mu_members WHERE workspace_id=?", (account[3:],)).fetchone()
        except sqlite3.Error:
            return 1
        return max(1, int(row[0]))

    def workspace_kind(self, account: str) -> str | None:
        if not account.startswith("ws:"):
            return "personal"
        try:
            row = self.conn().execute("SELECT type FROM mu_workspaces WHERE id=?", (account[3:],)).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def finished_since(self, since: float) -> list[sqlite3.Row]:
        try:
            return self.conn().execute(
                "SELECT prompt_id, owner, started, ended, CAST(entry AS TEXT) AS entry FROM ck_history "
                "WHERE ended>=? ORDER BY seq", (since,)).fetchall()
        except sqlite3.Error:
            return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Billing:
    def __init__(self, kernel: Any):
        self.kernel = kernel
        self.settings = Settings.from_config(kernel.config, kernel.database_path, kernel.dirs.user)
        self.db: Database | None = None
        self.tables = KernelTables(kernel.database_path)
        self.accounts: dict[str, dict[str, Any]] = {}
        self.plan_of: dict[str, str | None] = {}
        self.provider: PaymentProvider | None = None
        self.started = False
        self.broken = False
        # Run ids: unique across restarts (a random prefix per process) and cheap to make.
        self._run_prefix = uuid.uuid4().hex[:16] + "-"
        self._runs = itertools.count(1)
        self._unwritten: list[tuple[Any, ...]] = []
        self._unwritten_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.load_plans()
        providers: dict[str, Any] = {"manual": ManualProvider(self.settings.portal_url)}
        for result in self.kernel.host.call_each("ck_payment_providers", kernel=self.kernel):
            if isinstance(result, dict):
                providers.update(result)
        if self.settings.provider not in providers:
            raise LookupError(f"payment provider {self.settings.provider!r} is not installed "
                              f"(have: {', '.join(sorted(providers))})")
        self.provider = providers[self.settings.provider]
        self.db = Database(self.settings.database, on_external_change=self.invalidate)
        await self.db.open()
        recovered = await self.db.write(self._reconcile)
        if recovered:
            log.info("billing: charged %d prompt(s) that finished before the last stop was recorded", recovered)
        self.started = True

    async def stop(self) -> None:
        self.started = False
        if self.db is not None:
            await self.db.write(lambda conn: self.tables.close())
            await self.db.close()

    def invalidate(self) -> None:
        """Another process (``comfy-kernel billing``) changed the database: read accounts again."""
        self.accounts.clear()

    # -- accounts ----------------------------------------------------------------------------

    async def account(self, account: str) -> dict[str, Any]:
        row = self.accounts.get(account)
        if row is not None and row["period_end"] and row["period_end"] > time.time():
            return row
        if not self.started or self.db is None:
            raise fail(503, "unavailable", "Billing is not available; see the server log")
        row = await self.db.write(lambda conn: ledger.ensure_account(conn, self.settings, account,
                                                                       seats_of=self.tables.seats))
        return self._remember(row)

    def _remember(self, row: dict[str, Any]) -> dict[str, Any]:
        self.accounts[row["account"]] = row
        self.plan_of[row["account"]] = row["plan"] if row["status"] in ("active", "canceled") else None
        return row

    async def refresh(self, account: str) -> dict[str, Any]:
        self.accounts.pop(account, None)
        row = await self.account(account)
        executor = getattr(self.kernel, "executor", None)
        if executor is not None and hasattr(executor, "wake"):
            await executor.wake()
        return row

    def active_plan(self, row: dict[str, Any]) -> Any:
        return self.settings.plan(row["plan"]) if row["status"] in ("active", "canceled") else None

    @staticmethod
    def balance(row: dict[str, Any]) -> int:
        return int(row["monthly_micros"]) + int(row["prepaid_micros"])

    def money(self, micros: int) -> str:
        return f"{micros / MICROS:.4f} {self.settings.currency}"

    # -- /prompt ------------------------------------------------------------------------------

    def admit(self, request: Any, prompt: dict[str, Any], extra_data: dict[str, Any], owner: str) -> Any:
        """Decide on a prompt; answers at once when the account is cached, else an awaitable."""
        if not self.started:
            raise refuse(503, "billing_unavailable", "Billing is not available",
                         "The billing plugin could not start; prompts are refused until it does. "
                         "See the server log.")
        row = self.accounts.get(owner)
        if row is None or row["period_end"] <= time.time():
            return self._admit_loaded(request, prompt, extra_data, owner)
        self._decide(row, request, prompt, extra_data, owner)
        return None

    async def _admit_loaded(self, request: Any, prompt: dict[str, Any], extra_data: dict[str, Any],
                            owner: str) -> None:
        self._decide(await self.account(owner), request, prompt, extra_data, owner)

    def _decide(self, row: dict[str, Any], request: Any, prompt: dict[str, Any], extra_data: dict[str, Any],
                owner: str) -> None:
        plan = self.active_plan(row)
        if plan is None:
            raise refuse(402, "subscription_required", "No active plan",
                         f"The account {owner} has no active plan. Subscribe to one (GET /api/billing/plans) "
                         "or ask an administrator to assign one.", {"account": owner})
        balance = self.balance(row)
        if balance <= self.settings.min_balance_micros:
            raise refuse(402, "out_of_credits", "Not enough credits to run this prompt",
                         f"The balance of {owner} is {self.money(balance)}. Prompts already running finish; "
                         "new ones need credit: request a top-up (POST /api/billing/topup) or ask an "
                         "administrator for one.",
                         {"account": owner, "balance_micros": balance, "currency": self.settings.currency,
                          "plan_slug": plan.slug})
        if plan.max_queue:
            queued = self.queued_count(owner)
            if queued >= plan.max_queue:
                raise refuse(429, "queue_limit", "Too many prompts queued",
                             f"The {plan.slug} plan allows {plan.max_queue} queued or running prompts; "
                             f"{queued} are. Wait for some to finish.",
                             {"account": owner, "max_queue": plan.max_queue, "plan_slug": plan.slug})
        if plan.max_pixels or plan.max_batch:
            node_errors = limits.check(prompt, plan)
            if node_errors:
                raise refuse(403, "plan_limit", "The prompt exceeds the plan's limits",
                             f"The {plan.slug} plan allows at most {limits.describe(plan)}.",
                             {"plan_slug": plan.slug}, node_errors)
        identity = getattr(request.state, "identity", None)
        extra_data[STAMP] = {"run": f"{self._run_prefix}{next(self._runs):x}",
                             "user": getattr(identity, "user_id", None),
                             "workspace": getattr(identity, "workspace_id", None)}

    def queued_count(self, owner: str) -> int:
        ex = self.kernel.executor
        n = sum(1 for q in ex.heap if q.owner == owner)
        n += sum(1 for q in list(ex.running.values()) if q.owner == owner)
        return n + sum(1 for q in list(getattr(ex, "starting", {}).values()) if q.owner == owner)

    def may_start(self, event: dict[str, Any]) -> bool | None:
        if not self.started:
            return None
        owner = event["owner"]
        plan = self.settings.plan(self.plan_of.get(owner))
        if plan is None or not plan.max_concurrent:
            return None
        ex = self.kernel.executor
        running = sum(1 for q in list(ex.running.values()) if q.owner == owner)
        running += sum(1 for q in list(getattr(ex, "starting", {}).values()) if q.owner == owner)
        return running < plan.max_concurrent

    # -- metering -------------------------------------------------------------------------------

    def finished(self, event: dict[str, Any]) -> None:
        """Charge a finished prompt in memory now; write its usage record on the database thread.

        Only what the next ``/prompt`` needs (the cost, the balance) is done on
        the server loop; building the record (per-node figures, models, output
        sizes) happens with the write.
        """
        if not self.started or self.db is None:
            return
        owner = event["owner"]
        status = event.get("status") or {}
        nodes = event.get("nodes") or {}
        total = getattr(nodes, "busy_total", None)
        busy = total() if total is not None else busy_seconds(nodes)
        if status.get("status_str") != "success" and crashed(status):
            busy = 0.0  # the server died under it twice: not the user's bill
        worker = event.get("worker") or {}
        row = self.accounts.get(owner)
        plan = self.settings.plan(row["plan"] if row is not None else self.plan_of.get(owner))
        cost = plan.cost_micros(busy, worker) if plan is not None else 0
        if row is not None and cost:
            from_monthly, from_prepaid = ledger.split_charge(row["monthly_micros"], row["prepaid_micros"], cost)
            row["monthly_micros"] -= from_monthly
            row["prepaid_micros"] -= from_prepaid
        # Keep only what the record needs until it is written (not the whole event); records
        # queued together are written by one job.
        kept = (event["prompt_id"], owner, event.get("extra_data"), status, nodes, worker, event.get("started"),
                event.get("ended"), event.get("created"), event.get("outputs"), event.get("prompt"), busy, plan,
                cost)
        with self._unwritten_lock:
            self._unwritten.append(kept)
            first = len(self._unwritten) == 1
        if first:
            self.db.submit(self._write_usages)

    def _write_usages(self, conn: sqlite3.Connection) -> None:
        """Write the usage records queued since the last call: free runs in one statement.

        Never raises: a record that cannot be built or written is logged and
        skipped (the next start's reconciliation charges its prompt from
        history), so one bad record cannot cost the others.
        """
        with self._unwritten_lock:
            batch, self._unwritten = self._unwritten, []
        free: list[tuple[Any, ...]] = []
        for kept in batch:
            try:
                row, cost = self._usage_row(conn, kept)
            except Exception:
                log.exception("billing: could not build the usage record of prompt %s", kept[0])
                continue
            if not cost:
                free.append(row)
                continue
            conn.execute("SAVEPOINT usage")
            try:
                ledger.record_usage(conn, self.settings, dict(zip(ledger.USAGE_COLUMNS, row, strict=True)))
            except Exception:
                conn.execute("ROLLBACK TO usage")
                log.exception("billing: could not charge prompt %s", kept[0])
            conn.execute("RELEASE usage")
        if free:
            try:
                conn.executemany(ledger.INSERT_USAGE, free)
            except sqlite3.Error:
                log.exception("billing: could not write %d usage records", len(free))

    def _usage_row(self, conn: sqlite3.Connection, kept: tuple[Any, ...]) -> tuple[tuple[Any, ...], int]:
        prompt_id, owner, extra, status, nodes, worker, started, ended, created, outputs, prompt, busy, plan, cost = kept
        stamp = extra.get(STAMP) if isinstance(extra, dict) else None
        if not isinstance(stamp, dict):
            stamp = {}
        ended = ended or time.time()
        if plan is None:  # not cached on the loop (queued before a restart): the stored plan decides
            plan = self.active_plan(ledger.ensure_account(conn, self.settings, owner, ended, self.tables.seats))
            cost = plan.cost_micros(busy, worker) if plan is not None else 0
        outputs_count, outputs_bytes = output_figures(self.kernel.dirs, outputs or {})
        row = (str(stamp.get("run") or f"prompt:{prompt_id}"), prompt_id, owner,
               stamp.get("user") or (None if owner.startswith("ws:") else owner), stamp.get("workspace"),
               plan.slug if plan is not None else None, worker.get("id"), worker.get("type"), worker.get("name"),
               "crashed" if busy == 0.0 and crashed(status) else status_of(status), created, started, ended,
               max(0.0, ended - started) if started else 0.0, busy,
               orjson.dumps(node_figures(nodes)).decode(),
               orjson.dumps(models_used(self.kernel.folders, prompt, nodes)).decode(),
               outputs_count, outputs_bytes, cost, 0)
        return row, cost

    def _reconcile(self, conn: sqlite3.Connection) -> int:
        """Charge prompts whose history was written but whose usage was not (a crash in between).

        Their per-node figures are gone; they are charged for their wall time
        (an upper bound of device time) and marked ``recovered``. Prompts the
        server gave up on because it crashed under them are recorded free.
        """
        now = time.time()
        meta = dict(conn.execute("SELECT key, value FROM bl_meta").fetchall())
        since = float(meta.get("metering_since", now))
        if "metering_since" not in meta:
            conn.execute("INSERT INTO bl_meta(key, value) VALUES ('metering_since', ?)", (str(now),))
        since = max(since, float(meta.get("reconciled_until", since)) - 3600)
        recovered = 0
        for row in self.tables.finished_since(since):
            try:
                entry = orjson.loads(row["entry"])
                extra = entry["prompt"][3]
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            stamp = extra.get(STAMP) if isinstance(extra, dict) else None
            if not isinstance(stamp, dict) or not stamp.get("run"):
                continue
            run_id = str(stamp["run"])
            if conn.execute("SELECT 1 FROM bl_usage WHERE run_id=?", (run_id,)).fetchone():
                continue
            owner, status = row["owner"], entry.get("status") or {}
            account = ledger.ensure_account(conn, self.settings, owner, row["ended"], self.tables.seats)
            plan = self.active_plan(account)
            died = crashed(status)
            wall = max(0.0, (row["ended"] or 0) - (row["started"] or row["ended"] or 0))
            busy = 0.0 if died else wall
            usage = {"run_id": run_id, "prompt_id": row["prompt_id"], "account": owner,
                     "user_id": stamp.get("user"), "workspace_id": stamp.get("workspace"),
                     "plan": plan.slug if plan else None, "status": "crashed" if died else status_of(status),
                     "started": row["started"], "ended": row["ended"], "wall_s": wall, "busy_s": busy,
                     "nodes": {}, "models": models_used(self.kernel.folders, entry["prompt"][2],
                                                        list(entry["prompt"][4] or [])),
                     "cost_micros": plan.cost_micros(busy, None) if plan else 0, "recovered": True}
            usage["outputs_count"], usage["outputs_bytes"] = output_figures(self.kernel.dirs, entry.get("outputs"))
            if ledger.record_usage(conn, self.settings, usage):
                recovered += 1
        conn.execute("INSERT OR REPLACE INTO bl_meta(key, value) VALUES ('reconciled_until', ?)", (str(now),))
        return recovered

    # -- operations -------------------------------------------------------------------------------

    async def create_op(self, account: str, user_id: str | None, kind: str, params: dict[str, Any],
                        idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
        assert self.db is not None and self.provider is not None
        name = getattr(self.provider, "name", self.settings.provider)
        return await self.db.write(lambda conn: ledger.create_op(
            conn, account=account, user_id=user_id, kind=kind, params=params, idempotency_key=idempotency_key,
            provider=name, now=time.time()))

    async def settle_op(self, op_id: str, succeeded: bool, *, error: str | None = None,
                        actor: str | None = None) -> dict[str, Any]:
        """Complete a pending operation (a provider's callback, or an administrator's approval)."""
        assert self.db is not None
        op = await self.db.write(lambda conn: ledger.settle_op(conn, self.settings, op_id, succeeded, time.time(),
                                                                 error=error, actor=actor,
                                                                 seats_of=self.tables.seats))
        await self.refresh(op["account"])
        return op

    async def follow(self, op: dict[str, Any], answer: Answer) -> dict[str, Any]:
        """Apply a provider's immediate answer to a new operation."""
        if answer.status in ("succeeded", "failed"):
            return await self.settle_op(op["id"], answer.status == "succeeded", error=answer.error)
        return op

    def public_op(self, op: dict[str, Any]) -> dict[str, Any]:
        return {"id": op["id"], "account": op["account"], "user_id": op["user_id"], "kind": op["kind"],
                "params": orjson.loads(op["params"]) if isinstance(op["params"], str) else op["params"]}

    async def call_provider(self, method: str, *args: Any) -> Answer:
        assert self.provider is not None
        answer = await resolve(getattr(self.provider, method)(*args))
        if not isinstance(answer, Answer):
            raise TypeError(f"payment provider answered {answer!r} to {method}")
        return answer
