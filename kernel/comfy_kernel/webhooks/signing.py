"""Webhook signatures: HMAC-SHA256 over id, timestamp and body (the Standard Webhooks scheme).

Each delivery carries three headers:

* ``webhook-id``: the delivery's id, the same on every retry (receivers
  drop ids they have already processed);
* ``webhook-timestamp``: Unix seconds when this attempt was signed
  (receivers refuse stale ones, so a captured request cannot be replayed
  later);
* ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 over
  ``"{id}.{timestamp}.{body}"``, keyed with the secret's bytes.

Secrets look like ``whsec_`` + base64 of 32 random bytes. :func:`verify`
is what a receiver runs (``comfy_kernel.client.verify_webhook`` is the
same function).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(ValueError):
    """A webhook request whose signature, timestamp or headers do not check out."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(PREFIX):] if secret.startswith(PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise WebhookVerificationError("the secret is not a whsec_ base64 value") from None


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": signature(secret, msg_id, ts, body)}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           tolerance: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> str:
    """Check a received webhook; return its id. Raise :class:`WebhookVerificationError` otherwise.

    ``headers`` may be any mapping with case-insensitive or lower-case keys.
    Replays are refused by the timestamp window; to also drop a repeated
    delivery inside the window, remember the returned id.
    """
    lower = {str(k).lower(): v for k, v in headers.items()}
    msg_id, stamp, sig = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature")
    if not msg_id or not stamp or not sig:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance window (a replay?)")
    expected = signature(secret, msg_id, ts, body).split(",", 1)[1]
    for candidate in sig.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return msg_id
    raise WebhookVerificationError("no signature matches")
