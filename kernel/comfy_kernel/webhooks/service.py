"""Turning job events into signed, retried, durable webhook deliveries.

A job's targets are fixed when it is queued: the URL of its
``extra_data.webhook`` (signed with the owner's signing secret) and every
enabled webhook its owner registered (each signed with its own secret).
Events: ``queued``, ``started``, ``output`` (a node produced UI output),
``completed`` (the job ended, whatever the outcome: its ``status`` says
``completed``, ``failed`` or ``cancelled``). A target gets the events it
asked for, ``completed`` only by default.

Delivery is at least once, and exactly once unless the server dies between
a receiver's answer and the database write that records it; a repeat then
carries the same ``webhook-id``. Every event becomes an outbox row before
anything is sent, with an id derived from job, event and target, so an event
recorded twice (a job re-run after a crash, start-up reconciliation) is
still one delivery. A job whose end was not recorded before a crash is found
at start-up and its ``completed`` event queued then.

Retries: a delivery that gets no 2xx is tried again after
``--webhook-retry-delay`` seconds (default 5), each wait four times the
previous (capped at 6 hours, with 10 % jitter), up to
``--webhook-max-attempts`` attempts (default 9, about 12 hours). A 410 Gone,
or a target that turns out to be private, ends it at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..http import HTTPError
from . import signing
from .store import WebhookStore
from .targets import Outcome, TargetRefused, check_url, post

log = logging.getLogger(__name__)

EVENTS = ("queued", "started", "output", "completed")
DEFAULT_EVENTS = ["completed"]
MAX_CONCURRENT = 8
MAX_DELAY_S = 6 * 3600.0
ATTEMPT_TIMEOUT_S = 10.0
KEEP_DAYS = 30


@dataclass
class PromptWebhook:
    url: str
    events: list[str]


def parse_events(value: Any) -> list[str]:
    if value is None:
        return list(DEFAULT_EVENTS)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise HTTPError(400, f"webhook events are a non-empty list of {', '.join(EVENTS)}",
                        type="invalid_webhook")
    unknown = sorted(set(value) - set(EVENTS))
    if unknown:
        raise HTTPError(400, f"unknown webhook events: {', '.join(unknown)} (known: {', '.join(EVENTS)})",
                        type="invalid_webhook")
    return [e for e in EVENTS if e in value]


def delivery_id(prompt_id: str, event: str, target: str, extra: str = "") -> str:
    digest = hashlib.sha256("\0".join((prompt_id, event, target, extra)).encode()).hexdigest()
    return "msg_" + digest[:32]


class Webhooks:
    """``kernel.webhooks``: validation for routes, job tracking, and the delivery loop."""

    def __init__(self, kernel: Any):
        self.kernel = kernel
        config = kernel.config
        self.allow_private = bool(getattr(config, "webhook_allow_private", False))
        self.max_attempts = max(int(getattr(config, "webhook_max_attempts", 9) or 9), 1)
        self.retry_delay = max(float(getattr(config, "webhook_retry_delay", 5.0) or 5.0), 0.01)
        self.store = WebhookStore(kernel.database)
        self.open_jobs: dict[str, dict[str, Any]] = {}
        self.endpoint_owners: set[str] = set()
        self.inflight: set[str] = set()
        self._events: asyncio.Queue | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._attempts: set[asyncio.Task] = set()
        self.started = False

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        await self.store.prune(time.time() - KEEP_DAYS * 86400)
        self._events = asyncio.Queue()
        self._wake = asyncio.Event()
        self.endpoint_owners = await self.store.owners_with_endpoints()
        for job in await self.store.tracked(only_open=True):
            self.open_jobs[job["prompt_id"]] = job
        executor = self.kernel.executor
        executor.jobs.add_listener(self._on_event)
        await self._reconcile()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._event_loop()), loop.create_task(self._send_loop())]
        self.started = True

    async def stop(self) -> None:
        for task in [*self._tasks, *self._attempts]:
            task.cancel()
        for task in [*self._tasks, *self._attempts]:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        await self.store.close()
        self.started = False

    async def _reconcile(self) -> None:
        """Queue the final event of jobs that ended (or vanished) while it was not recorded."""
        executor = self.kernel.executor
        for prompt_id in list(self.open_jobs):
            if executor.status(prompt_id) is not None:
                continue
            self._events_put((prompt_id, "completed", {"node": None, "prompt_id": prompt_id}, None))

    # -- tracking (routes) ---------------------------------------------------------------------------------

    def parse_prompt_webhook(self, value: Any) -> PromptWebhook:
        """``extra_data.webhook``: a URL, or ``{"url", "events"}``; 400 for anything else."""
        if isinstance(value, str):
            value = {"url": value}
        if not isinstance(value, dict):
            raise HTTPError(400, 'extra_data.webhook is a URL or {"url": ..., "events": [...]}',
                            type="invalid_webhook")
        unknown = sorted(set(value) - {"url", "events"})
        if unknown:
            raise HTTPError(400, f"unknown extra_data.webhook fields: {', '.join(unknown)}", type="invalid_webhook")
        return PromptWebhook(self.check_url(value.get("url")), parse_events(value.get("events")))

    def check_url(self, url: Any) -> str:
        try:
            return check_url(url, self.allow_private)
        except TargetRefused as exc:
            raise HTTPError(400, str(exc), type="invalid_webhook") from None

    def wants(self, owner: str) -> bool:
        return owner in self.endpoint_owners

    async def track(self, prompt_id: str, owner: str, hook: PromptWebhook | None, base_url: str) -> None:
        """Fix the targets of a job about to be queued (nothing to do when it has none)."""
        targets: list[dict[str, Any]] = []
        if hook is not None:
            targets.append({"url": hook.url, "events": hook.events})
            await self.store.owner_secret(owner, signing.new_secret)
        if owner in self.endpoint_owners:
            for endpoint in await self.store.endpoints(owner):
                if endpoint["enabled"]:
                    targets.append({"endpoint_id": endpoint["id"], "events": endpoint["events"]})
        if not targets:
            return
        job = {"prompt_id": prompt_id, "owner": owner, "targets": targets, "base_url": base_url}
        await self.store.track(prompt_id, owner, targets, base_url)
        self.open_jobs[prompt_id] = job

    def queued(self, prompt_id: str, number: Any) -> None:
        if prompt_id in self.open_jobs:
            self._events_put((prompt_id, "queued", {"prompt_id": prompt_id, "number": number}, None))

    async def refresh_endpoint_owners(self) -> None:
        self.endpoint_owners = await self.store.owners_with_endpoints()

    # -- events -------------------------------------------------------------------------------------

    def _on_event(self, log_: Any, event: str, data: Any) -> None:
        if log_.prompt_id not in self.open_jobs:
            return
        if event == "execution_start":
            kind = "started"
        elif event == "executed":
            kind = "output"
        elif event == "executing" and log_.done and isinstance(data, dict) and data.get("node") is None:
            kind = "completed"
        else:
            return
        self._events_put((log_.prompt_id, kind, data, log_.status))

    def _events_put(self, item: tuple) -> None:
        if self._events is not None:
            self._events.put_nowait(item)

    async def _event_loop(self) -> None:
        assert self._events is not None
        while True:
            item = await self._events.get()
            try:
                await self._record(*item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not record webhook event %s of job %s", item[1], item[0])

    async def _record(self, prompt_id: str, kind: str, data: Any, status: str | None) -> None:
        job = self.open_jobs.get(prompt_id)
        if job is None:
            return
        payload = await self._payload(job, kind, data, status)
        if payload is None:
            return  # the job is queued again (re-run after a restart): its end comes later
        body = orjson.dumps({"type": f"job.{kind}", "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")
                             .replace("+00:00", "Z"), "data": payload}, option=orjson.OPT_NON_STR_KEYS)
        extra = str(data.get("node")) if kind == "output" and isinstance(data, dict) else ""
        rows = []
        for target in job["targets"]:
            if kind not in target["events"]:
                continue
            key = f"endpoint:{target['endpoint_id']}" if "endpoint_id" in target else f"url:{target['url']}"
            rows.append({"id": delivery_id(prompt_id, kind, key, extra), "prompt_id": prompt_id,
                         "owner": job["owner"], "event": kind, "url": target.get("url") or "",
                         "endpoint_id": target.get("endpoint_id"), "payload": body})
        final = kind == "completed"
        if rows or final:
            await self.store.add_deliveries(rows, final_of=prompt_id if final else None)
        if final:
            self.open_jobs.pop(prompt_id, None)
        if rows and self._wake is not None:
            self._wake.set()

    async def _payload(self, job: dict[str, Any], kind: str, data: Any, status: str | None) -> dict[str, Any] | None:
        from ..execution.job_routes import job_urls, result_from_history, with_urls

        prompt_id, base = job["prompt_id"], job["base_url"]
        if kind == "queued":
            return {"prompt_id": prompt_id, "status": "pending", "number": data.get("number"),
                    **job_urls(base, prompt_id)}
        if kind == "started":
            return {"prompt_id": prompt_id, "status": "in_progress", **job_urls(base, prompt_id)}
        if kind == "output":
            node = str(data.get("node"))
            return {"prompt_id": prompt_id, "node": node, "display_node": data.get("display_node"),
                    "output": with_urls({node: data.get("output") or {}}, base)[node]}
        executor = self.kernel.executor
        record = await executor.store.history_record(job["owner"], prompt_id)
        if record is not None:
            blob, created, started, ended = record
            return result_from_history(prompt_id, orjson.loads(blob), created, started, ended, base)
        if executor.status(prompt_id) is not None:
            return None
        return {"prompt_id": prompt_id, "status": status or "cancelled", "outputs": {}, **job_urls(base, prompt_id)}

    # -- delivery ---------------------------------------------------------------------------------------

    def backoff(self, attempts: int) -> float:
        delay = min(self.retry_delay * 4 ** (attempts - 1), MAX_DELAY_S)
        return delay * random.uniform(0.9, 1.1)

    async def _send_loop(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                free = MAX_CONCURRENT - len(self.inflight)
                if free > 0:
                    for delivery in await self.store.due(time.time(), self.inflight, free):
                        self.inflight.add(delivery["id"])
                        task = asyncio.get_running_loop().create_task(self._attempt(delivery))
                        self._attempts.add(task)
                        task.add_done_callback(self._attempts.discard)
                upcoming = await self.store.next_due(self.inflight)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery loop failed; retrying in a second")
                upcoming = time.time() + 1
            timeout = 3600.0 if upcoming is None else min(max(upcoming - time.time(), 0.01), 3600.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _attempt(self, delivery: dict[str, Any]) -> None:
        unrecorded = False
        try:
            unrecorded = await self._attempt_once(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", delivery["id"])
        finally:
            if not unrecorded:  # an attempt whose outcome is not on disk is not made again by this process
                self.inflight.discard(delivery["id"])
            if self._wake is not None:
                self._wake.set()

    async def _attempt_once(self, delivery: dict[str, Any]) -> bool:
        """Send once and record the outcome; True when the outcome could not be recorded."""
        if not await self.store.still_due(delivery):
            return False
        url, secret, problem = await self._target(delivery)
        if problem is not None:
            outcome = Outcome(None, problem, 0, permanent=True)
        else:
            body = bytes(delivery["payload"])
            headers = signing.signed_headers(secret, delivery["id"], body)
            outcome = await post(url, body, headers, allow_private=self.allow_private, timeout=ATTEMPT_TIMEOUT_S)
        attempts = delivery["attempts"] + 1
        if outcome.ok:
            state, upcoming = "delivered", 0.0
        elif outcome.permanent or attempts >= self.max_attempts:
            state, upcoming = "failed", 0.0
        else:
            state, upcoming = "pending", time.time() + self.backoff(attempts)
        if not await self._record_attempt(delivery, outcome, state, upcoming):
            return True
        if state == "failed":
            log.warning("webhook %s of job %s to %s failed for good: %s", delivery["event"],
                        delivery["prompt_id"], url or delivery["url"], outcome.error)
        return False

    async def _record_attempt(self, delivery: dict[str, Any], outcome: Any, state: str, upcoming: float) -> bool:
        """Write the attempt, insisting a little: a write that fails would otherwise mean a second send."""
        for pause in (0.1, 0.5, 2.0, 5.0, None):
            try:
                await self.store.record_attempt(delivery, outcome, state, upcoming)
                return True
            except asyncio.CancelledError:
                raise
            except Exception:
                if pause is None:
                    log.exception("could not record webhook delivery %s", delivery["id"])
                    return False
                await asyncio.sleep(pause)
        return False

    async def _target(self, delivery: dict[str, Any]) -> tuple[str, str, str | None]:
        """The URL and secret to use now, or a reason not to send."""
        endpoint_id = delivery.get("endpoint_id")
        if endpoint_id:
            endpoint = await self.store.endpoint(endpoint_id)
            if endpoint is None:
                return "", "", "the webhook was deleted"
            if not endpoint["enabled"]:
                return endpoint["url"], "", "the webhook is disabled"
            return endpoint["url"], endpoint["secret"], None
        secret = await self.store.owner_secret(delivery["owner"], signing.new_secret)
        return delivery["url"], secret, None
