"""Webhook signatures: the scheme recomputed independently, verification, and what verification refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from comfy_kernel.webhooks.signing import WebhookVerificationError, new_secret, signed_headers, verify

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
BODY = b'{"type":"job.completed"}'


def test_signature_is_hmac_sha256_over_id_timestamp_and_body():
    headers = signed_headers(SECRET, "msg_1", BODY, timestamp=1700000000)
    expected = hmac.new(b"k" * 32, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    assert headers == {"webhook-id": "msg_1", "webhook-timestamp": "1700000000",
                       "webhook-signature": "v1," + base64.b64encode(expected).decode()}


def test_verify_accepts_good_requests_and_rotated_signature_lists():
    headers = signed_headers(SECRET, "msg_2", BODY, timestamp=1700000000)
    assert verify(SECRET, headers, BODY, now=1700000100) == "msg_2"
    other = signed_headers(new_secret(), "msg_2", BODY, timestamp=1700000000)["webhook-signature"]
    both = {**{k.upper(): v for k, v in headers.items()}, "WEBHOOK-SIGNATURE": f"{other} {headers['webhook-signature']}"}
    assert verify(SECRET, both, BODY, now=1700000000) == "msg_2"


@pytest.mark.parametrize("change", ["body", "id", "old", "future", "missing", "garbage-ts", "bad-secret"])
def test_verify_refuses(change):
    headers = signed_headers(SECRET, "msg_3", BODY, timestamp=1700000000)
    body, now, secret = BODY, 1700000000.0, SECRET
    if change == "body":
        body = BODY + b" "
    elif change == "id":
        headers["webhook-id"] = "msg_4"
    elif change == "old":
        now += 301
    elif change == "future":
        now -= 301
    elif change == "missing":
        del headers["webhook-signature"]
    elif change == "garbage-ts":
        headers["webhook-timestamp"] = "soon"
    elif change == "bad-secret":
        secret = "whsec_!!!"
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body, now=now)


def test_secrets_are_random_and_well_formed():
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("whsec_") and len(base64.b64decode(a[6:])) == 32
