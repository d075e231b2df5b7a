"""The running billing state of one server (``kernel.state["billing"]``).

It holds the plan file, the write path to the billing tables in the kernel's
database (:class:`.store.BillingStore`), a cache of account rows (plan,
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

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import time
import uuid
from typing import Any

import orjson
from sqlalchemy import func, or_, select

from comfy_kernel.http import HTTPError
from comfy_kernel.storage import Database

from . import ledger, limits
from .adopt import import_file
from .config import MICROS, Settings
from .metering import STAMP, busy_seconds, crashed, models_used, node_figures, output_figures, status_of
from .providers import Answer, ManualProvider, PaymentProvider
from .store import BillingStore
from .tables import history_table, meta, mu_members, mu_users, mu_workspaces, usage

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


def kernel_directory(kernel: Any) -> str:
    """Where the kernel's SQLite file is (the user directory on PostgreSQL): older billing files lie beside it."""
    path = getattr(kernel.database, "path", None)
    return os.path.dirname(os.path.abspath(path)) if path else kernel.dirs.user


class KernelTables:
    """Look-ups in tables billing does not own: workspace members and kinds, users, history after a crash.

    The multiuser plugin's tables are missing when it is not installed: those
    reads run on their own, outside any transaction (a failed statement would
    end a PostgreSQL transaction), and answer a default.
    """

    def __init__(self, db: Database):
        self.db = db

    async def seats(self, account: str) -> int:
        if not account.startswith("ws:"):
            return 1
        try:
            found = await self.db.scalar(select(func.count()).select_from(mu_members)
                                         .where(mu_members.c.workspace_id == account[3:]))
        except Exception:  # noqa: BLE001 - no multiuser tables
            return 1
        return max(1, int(found or 0))

    async def workspace_kind(self, account: str) -> str | None:
        if not account.startswith("ws:"):
            return "personal"
        try:
            return await self.db.scalar(select(mu_workspaces.c.type).where(mu_workspaces.c.id == account[3:]))
        except Exception:  # noqa: BLE001 - no multiuser tables
            return None

    async def personal_account(self, who: str) -> str | None:
        """``ws:<personal workspace>`` of the user with id or (case-insensitive) name ``who``."""
        u = mu_users.c
        try:
            row = await self.db.fetch_one(select(u.personal_workspace_id).where(
                or_(u.id == who, func.lower(u.username) == who.lower())))
        except Exception:  # noqa: BLE001 - no multiuser tables: users are their own accounts
            return who or None
        if row is None or not row[0]:
            return None
        return f"ws:{row[0]}"

    @staticmethod
    async def finished_since(tx: Any, since: float) -> list[tuple[str, str, float | None, float | None, bytes]]:
        """(prompt id, owner, started, ended, entry JSON) of the prompts that finished since ``since``."""
        h = history_table.c
        rows = await tx.fetch_all(select(h.prompt_id, h.owner, h.started, h.ended, h.entry)
                                  .where(h.ended >= since).order_by(h.seq))
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]


class Billing:
    #: How often finished prompts' usage records are written (seconds). A crash loses at most
    #: this much, and the next start charges those prompts from the kernel's history.
    FLUSH = 0.25

    def __init__(self, kernel: Any):
        self.kernel = kernel
        self.settings = Settings.from_config(kernel.config, kernel_directory(kernel), kernel.dirs.user)
        self.store: BillingStore | None = None
        self.tables = KernelTables(kernel.database)
        self.accounts: dict[str, dict[str, Any]] = {}
        self.plan_of: dict[str, str | None] = {}
        self.provider: PaymentProvider | None = None
        self.started = False
        self.broken = False
        # Run ids: unique across restarts (a random prefix per process) and cheap to make.
        self._run_prefix = uuid.uuid4().hex[:16] + "-"
        self._runs = itertools.count(1)
        self._unwritten: list[tuple[Any, ...]] = []
        self._metering: asyncio.Task | None = None
        self._due: asyncio.Event | None = None
        self._flushing: asyncio.Lock | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def db(self) -> Database | None:
        """The kernel's database, once billing started (routes read usage, the ledger and events there)."""
        return self.store.db if self.store is not None else None

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
        self.store = BillingStore(self.kernel.database, on_external_change=self.invalidate)
        await self.store.open()
        await import_file(self.store, self.settings.import_from)
        recovered = await self.store.write(self._reconcile)
        if recovered:
            log.info("billing: charged %d prompt(s) that finished before the last stop was recorded", recovered)
        self._due, self._flushing = asyncio.Event(), asyncio.Lock()
        self._metering = asyncio.get_running_loop().create_task(self._meter())
        self.started = True

    async def stop(self) -> None:
        self.started = False
        task, self._metering = self._metering, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.store is not None:
            await self.flush()
            await self.store.close()

    async def fresh(self) -> Database:
        """The database, once the usage records of the prompts that finished are written: what readers expect."""
        await self.flush()
        assert self.store is not None
        return self.store.db

    def invalidate(self) -> None:
        """Another process (``comfy-kernel billing``, another server) changed the tables: read accounts again."""
        self.accounts.clear()

    # -- accounts ----------------------------------------------------------------------------

    async def account(self, account: str) -> dict[str, Any]:
        row = self.accounts.get(account)
        if row is not None and row["period_end"] and row["period_end"] > time.time():
            return row
        if not self.started or self.store is None:
            raise fail(503, "unavailable", "Billing is not available; see the server log")
        await self.flush()  # the charges of prompts that finished: the row read next includes them
        row = await self.store.write(lambda tx: ledger.ensure_account(tx, self.settings, account,
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
        """Charge a finished prompt in memory now; its usage record is written within :attr:`FLUSH` seconds.

        Only what the next ``/prompt`` needs (the cost, the balance) is done on
        the server loop; building the record (per-node figures, models, output
        sizes) happens on a thread just before the write.
        """
        if not self.started or self._due is None:
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
        # Keep only what the record needs until it is written (not the whole event).
        self._unwritten.append((event["prompt_id"], owner, event.get("extra_data"), status, nodes, worker,
                                event.get("started"), event.get("ended"), event.get("created"), event.get("outputs"),
                                event.get("prompt"), busy, plan, cost))
        if len(self._unwritten) == 1:
            self._due.set()

    async def _meter(self) -> None:
        """Write the usage records of finished prompts, those of a :attr:`FLUSH` period together."""
        assert self._due is not None
        while True:
            await self._due.wait()
            await asyncio.sleep(self.FLUSH)
            self._due.clear()
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - logged; the records of a failed flush were logged one by one
                log.exception("billing: writing usage records failed")

    async def flush(self) -> None:
        """Write the usage records not written yet (now, and wait for it)."""
        if not self._unwritten or self.store is None or self._flushing is None:
            return
        async with self._flushing:
            batch, self._unwritten = self._unwritten, []
            if not batch:
                return
            records = await asyncio.to_thread(self._build_usages, batch)
            jobs = [self._charge_job(record, kept) for record, kept in records]
            for (_record, kept), error in zip(records, await self.store.write_batch(jobs), strict=True):
                if error is not None:
                    log.error("billing: could not charge prompt %s: %s", kept[0], error)

    def _build_usages(self, batch: list[tuple[Any, ...]]) -> list[tuple[dict[str, Any], tuple[Any, ...]]]:
        """The usage records of ``batch`` (on a thread: per-node figures, models, output file sizes).

        A record that cannot be built is logged and skipped (the next start's
        reconciliation charges its prompt from history); the others go on.
        """
        out = []
        for kept in batch:
            try:
                out.append((self._usage_record(kept), kept))
            except Exception:  # noqa: BLE001 - one bad record must not cost the others
                log.exception("billing: could not build the usage record of prompt %s", kept[0])
        return out

    def _usage_record(self, kept: tuple[Any, ...]) -> dict[str, Any]:
        prompt_id, owner, extra, status, nodes, worker, started, ended, created, outputs, prompt, busy, plan, cost = kept
        stamp = extra.get(STAMP) if isinstance(extra, dict) else None
        if not isinstance(stamp, dict):
            stamp = {}
        ended = ended or time.time()
        outputs_count, outputs_bytes = output_figures(self.kernel.dirs, outputs or {})
        return {"run_id": str(stamp.get("run") or f"prompt:{prompt_id}"), "prompt_id": prompt_id, "account": owner,
                "user_id": stamp.get("user") or (None if owner.startswith("ws:") else owner),
                "workspace_id": stamp.get("workspace"), "plan": plan.slug if plan is not None else None,
                "worker": worker.get("id"), "device_type": worker.get("type"), "device_name": worker.get("name"),
                "status": "crashed" if busy == 0.0 and crashed(status) else status_of(status),
                "created": created, "started": started, "ended": ended,
                "wall_s": max(0.0, ended - started) if started else 0.0, "busy_s": busy,
                "nodes": orjson.dumps(node_figures(nodes)).decode(),
                "models": orjson.dumps(models_used(self.kernel.folders, prompt, nodes)).decode(),
                "outputs_count": outputs_count, "outputs_bytes": outputs_bytes, "cost_micros": cost, "recovered": 0}

    def _charge_job(self, record: dict[str, Any], kept: tuple[Any, ...]) -> Any:
        async def job(tx: Any) -> bool:
            if kept[12] is None:  # not cached on the loop (queued before a restart): the stored plan decides
                account = await ledger.ensure_account(tx, self.settings, record["account"], record["ended"],
                                                      self.tables.seats)
                plan = self.active_plan(account)
                record["plan"] = plan.slug if plan is not None else None
                record["cost_micros"] = plan.cost_micros(kept[11], kept[5]) if plan is not None else 0
            return await ledger.record_usage(tx, self.settings, record, self.tables.seats)

        return job

    async def _reconcile(self, tx: Any) -> int:
        """Charge prompts whose history was written but whose usage was not (a crash in between).

        Their per-node figures are gone; they are charged for their wall time
        (an upper bound of device time) and marked ``recovered``. Prompts the
        server gave up on because it crashed under them are recorded free.
        """
        now = time.time()
        known = dict(await tx.fetch_all(select(meta.c.key, meta.c.value)))
        since = float(known.get("metering_since", now))
        if "metering_since" not in known:
            await tx.execute(tx.db.insert(meta).values(key="metering_since", value=str(now))
                             .on_conflict_do_nothing(index_elements=["key"]))
        since = max(since, float(known.get("reconciled_until", since)) - 3600)
        recovered = 0
        for prompt_id, owner, started, ended, blob in await self.tables.finished_since(tx, since):
            try:
                entry = orjson.loads(blob)
                extra = entry["prompt"][3]
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            stamp = extra.get(STAMP) if isinstance(extra, dict) else None
            if not isinstance(stamp, dict) or not stamp.get("run"):
                continue
            run_id = str(stamp["run"])
            if await tx.scalar(select(usage.c.run_id).where(usage.c.run_id == run_id)) is not None:
                continue
            status = entry.get("status") or {}
            account = await ledger.ensure_account(tx, self.settings, owner, ended, self.tables.seats)
            plan = self.active_plan(account)
            died = crashed(status)
            wall = max(0.0, (ended or 0) - (started or ended or 0))
            busy = 0.0 if died else wall
            record = {"run_id": run_id, "prompt_id": prompt_id, "account": owner,
                      "user_id": stamp.get("user"), "workspace_id": stamp.get("workspace"),
                      "plan": plan.slug if plan else None, "status": "crashed" if died else status_of(status),
                      "started": started, "ended": ended, "wall_s": wall, "busy_s": busy,
                      "nodes": {}, "models": models_used(self.kernel.folders, entry["prompt"][2],
                                                         list(entry["prompt"][4] or [])),
                      "cost_micros": plan.cost_micros(busy, None) if plan else 0, "recovered": True}
            record["outputs_count"], record["outputs_bytes"] = output_figures(self.kernel.dirs, entry.get("outputs"))
            if await ledger.record_usage(tx, self.settings, record, self.tables.seats):
                recovered += 1
        until = tx.db.insert(meta).values(key="reconciled_until", value=str(now))
        await tx.execute(until.on_conflict_do_update(index_elements=["key"], set_={"value": until.excluded.value}))
        return recovered

    # -- operations -------------------------------------------------------------------------------

    async def create_op(self, account: str, user_id: str | None, kind: str, params: dict[str, Any],
                        idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
        assert self.store is not None and self.provider is not None
        name = getattr(self.provider, "name", self.settings.provider)
        return await self.store.write(lambda tx: ledger.create_op(
            tx, account=account, user_id=user_id, kind=kind, params=params, idempotency_key=idempotency_key,
            provider=name, now=time.time()))

    async def settle_op(self, op_id: str, succeeded: bool, *, error: str | None = None,
                        actor: str | None = None) -> dict[str, Any]:
        """Complete a pending operation (a provider's callback, or an administrator's approval)."""
        assert self.store is not None
        op = await self.store.write(lambda tx: ledger.settle_op(tx, self.settings, op_id, succeeded, time.time(),
                                                               error=error, actor=actor, seats_of=self.tables.seats))
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
