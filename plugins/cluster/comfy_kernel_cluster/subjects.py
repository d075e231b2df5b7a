"""Names on the NATS side, in one place, and the JetStream objects the cluster needs.

Subjects (``<p>`` is the prefix, ``ck`` by default, so that several clusters
can share one NATS server):

``<p>.prompts.normal``     the work-queue stream: one message per queued prompt
``<p>.prompts.front``      the same for prompts queued with ``front: true``, which workers take first
``<p>.out.ev.<client>``    a WebSocket message or preview frame for one client (``_all``: every client)
``<p>.out.q.<change>``     the queue changed (``queued``, ``started``, ``finished``, ``deleted``)
``<p>.ctl.<command>``      front-ends to workers: ``interrupt``, ``free``

Front-ends read everything under ``<p>.out.>`` with one subscription, so a
worker's events and its ``finished`` note arrive in the order it sent them.
"""

from __future__ import annotations

import re
from typing import Any

#: How long a worker may hold a prompt without a sign of life (seconds).
DEFAULT_ACK_WAIT = 30.0
#: How long a worker's announcement lives without being renewed (seconds).
ANNOUNCE_TTL = 15.0

_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class Names:
    def __init__(self, prefix: str = "ck"):
        self.prefix = prefix
        self.stream = f"{prefix.upper()}_PROMPTS"
        self.consumer = "workers"
        self.front_consumer = "workers-front"
        self.prompts = f"{prefix}.prompts.normal"
        self.front_prompts = f"{prefix}.prompts.front"
        self.out = f"{prefix}.out.>"
        self.queue_prefix = f"{prefix}.out.q"
        self.control = f"{prefix}.ctl"
        self.workers_bucket = f"{prefix}_workers"

    def events(self, client_id: str | None) -> str:
        """The subject of a message for one client, or for all when None."""
        if client_id is None:
            return f"{self.prefix}.out.ev._all"
        if _SAFE.match(client_id) and client_id != "_all":
            return f"{self.prefix}.out.ev.{client_id}"
        return f"{self.prefix}.out.ev.x{client_id.encode('utf-8').hex()[:200]}"


async def ensure_stream(js: Any, names: Names, ack_wait: float) -> Any:
    """Create (or keep) the work-queue stream on disk and the workers' durable pull consumers (one per lane)."""
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    config = StreamConfig(name=names.stream, subjects=[names.prompts, names.front_prompts], retention=RetentionPolicy.WORK_QUEUE,
                          storage=StorageType.FILE, duplicate_window=120.0)
    try:
        await js.stream_info(names.stream)
    except NotFoundError:
        await js.add_stream(config)
    for durable, subject in ((names.consumer, names.prompts), (names.front_consumer, names.front_prompts)):
        try:
            await js.consumer_info(names.stream, durable)
        except NotFoundError:
            await js.add_consumer(names.stream, ConsumerConfig(
                durable_name=durable, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait,
                max_ack_pending=-1))
    return config


async def workers_bucket(js: Any, names: Names) -> Any:
    """The key-value bucket where workers announce themselves (entries expire unless renewed)."""
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BucketNotFoundError, NotFoundError

    try:
        return await js.key_value(names.workers_bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(KeyValueConfig(bucket=names.workers_bucket, ttl=ANNOUNCE_TTL,
                                                        storage=StorageType.MEMORY))


async def announcements(kv: Any) -> list[dict[str, Any]]:
    """Every worker's announcement in the bucket (those not expired), by worker id."""
    import orjson

    found = []
    try:
        keys = await kv.keys()
    except Exception:  # no keys yet
        return []
    for key in keys:
        try:
            entry = await kv.get(key)
        except Exception:
            continue
        if entry is not None and entry.value:
            found.append(orjson.loads(entry.value))
    return sorted(found, key=lambda w: w.get("id", ""))


async def reachable(url: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to one of the servers of ``url`` (comma-separated) opens.

    nats-py's first connect, told to reconnect forever, also retries forever;
    asking first lets a process start without NATS and connect later.
    """
    import asyncio
    from urllib.parse import urlparse

    for part in url.split(","):
        parsed = urlparse(part.strip() if "://" in part else f"nats://{part.strip()}")
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout)
        except (TimeoutError, OSError):
            continue
        writer.close()
        return True
    return False
