"""Payment providers: who takes the money for top-ups and paid plans.

A provider is published by any plugin through the kernel hook
``ck_payment_providers`` (``{name: provider}``) and chosen with
``--billing-provider NAME``. It never sees card data: it hands the person a
URL of the payment service (``redirect_url`` of an answer, or the payment
portal) and reports back when the payment settled, by awaiting
``kernel.state["billing"].settle_op(op_id, succeeded, error=...)`` (typically
from a webhook route it registers itself with ``ck_register_routes``).

The built-in :class:`ManualProvider` involves no payment service at all:
top-ups and paid plans wait for an administrator to approve them
(``POST /api/admin/billing/ops/{id}/approve``, or ``comfy-kernel billing
approve``), after being paid however the organisation pays (an invoice, a
transfer); the payment portal is a configured URL (``portal_url`` in the
plan file), for example the finance team's page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    """A provider's answer to a request: settled now, or pending (with a URL to send the person to)."""

    status: str  # "pending", "succeeded" or "failed"
    redirect_url: str | None = None
    error: str | None = None


class PaymentProvider:
    """The interface the billing plugin calls; every method may be a coroutine function.

    ``op`` is the billing operation (``id``, ``account``, ``user_id``,
    ``kind``, ``params``) and stays pending until :meth:`start_topup` or
    :meth:`start_subscription` answers ``succeeded``/``failed`` or the
    provider settles it later.
    """

    name = "provider"

    def portal_url(self, account: str, return_url: str | None) -> str | None:
        """Where the person manages payment methods; None when there is no such page."""
        raise NotImplementedError

    def start_topup(self, op: dict[str, Any], amount_cents: int) -> Answer:
        raise NotImplementedError

    def start_subscription(self, op: dict[str, Any], plan: Any, cost_today_cents: int,
                           return_url: str | None) -> Answer:
        raise NotImplementedError

    def cancel_subscription(self, op: dict[str, Any]) -> Answer:
        return Answer("succeeded")

    def resume_subscription(self, op: dict[str, Any]) -> Answer:
        return Answer("succeeded")


class ManualProvider(PaymentProvider):
    """Administrators approve top-ups and paid plans; the portal is a configured URL."""

    name = "manual"

    def __init__(self, portal: str | None = None):
        self.portal = portal

    def portal_url(self, account: str, return_url: str | None) -> str | None:
        if not self.portal:
            return None
        if "{return_url}" in self.portal:
            from urllib.parse import quote

            return self.portal.replace("{return_url}", quote(return_url or "", safe=""))
        return self.portal

    def start_topup(self, op: dict[str, Any], amount_cents: int) -> Answer:
        return Answer("pending", redirect_url=self.portal)

    def start_subscription(self, op: dict[str, Any], plan: Any, cost_today_cents: int,
                           return_url: str | None) -> Answer:
        if cost_today_cents <= 0:
            return Answer("succeeded")
        return Answer("pending", redirect_url=self.portal)
