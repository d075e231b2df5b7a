"""Webhooks: signed, retried, durable notifications of a job's progress.

``attach(kernel)`` (called by the server after the executor is attached)
sets ``kernel.webhooks``; the kernel starts and stops it with the executor.
Module map: :mod:`.service` (events to deliveries, retries), :mod:`.store`
(SQLite outbox and registrations), :mod:`.targets` (which addresses are
allowed, the HTTP POST), :mod:`.signing` (HMAC-SHA256 signatures and their
verification), :mod:`.routes` (HTTP).
"""

from __future__ import annotations

from typing import Any

from .service import Webhooks
from .signing import WebhookVerificationError, verify


def attach(kernel: Any) -> Webhooks:
    hooks = Webhooks(kernel)
    kernel.webhooks = hooks
    return hooks


__all__ = ["attach", "Webhooks", "WebhookVerificationError", "verify"]
