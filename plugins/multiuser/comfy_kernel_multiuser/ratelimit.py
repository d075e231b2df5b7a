"""Rate limits and lockouts for sign-in and token endpoints (in memory, per process).

Two mechanisms:

* a sliding one-minute window per (endpoint, client address), which caps
  request volume on every endpoint that checks a credential;
* failure counting per account and per address: after ``max_failures``
  failed attempts within the lockout window, further attempts are refused
  until the window has passed, whether or not the password is right, so
  online guessing gets a handful of tries per window.

Counters live in memory: a restart clears them, which an attacker cannot
trigger remotely. Both structures are bounded so a flood of distinct
addresses cannot exhaust memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

MAX_TRACKED = 50_000


class RateLimiter:
    def __init__(self, per_minute: int, max_failures: int, lockout: int):
        self.per_minute = max(1, per_minute)
        self.max_failures = max(1, max_failures)
        self.lockout = max(1, lockout)
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    @staticmethod
    def _trim(store: OrderedDict[str, deque[float]], key: str, horizon: float) -> deque[float]:
        bucket = store.get(key)
        if bucket is None:
            bucket = deque()
            store[key] = bucket
            if len(store) > MAX_TRACKED:
                store.popitem(last=False)
        else:
            store.move_to_end(key)
        while bucket and bucket[0] < horizon:
            bucket.popleft()
        return bucket

    def hit(self, endpoint: str, address: str) -> float | None:
        """Count a request; returns the seconds to wait when over the limit, else None."""
        t = time.monotonic()
        bucket = self._trim(self._hits, f"{endpoint}|{address}", t - 60.0)
        if len(bucket) >= self.per_minute:
            return max(1.0, 60.0 - (t - bucket[0]))
        bucket.append(t)
        return None

    def locked(self, key: str, limit: int | None = None) -> float | None:
        """Seconds left of a lockout on ``key`` (``user:<name>``, ``addr:<ip>``), else None.

        ``limit`` overrides ``max_failures`` (addresses get a higher one, so one
        shared NAT address is not locked out by a single user's typos).
        """
        t = time.monotonic()
        limit = limit or self.max_failures
        bucket = self._trim(self._failures, key, t - self.lockout)
        if len(bucket) >= limit:
            return max(1.0, self.lockout - (t - bucket[-limit]))
        return None

    def fail(self, *keys: str) -> None:
        t = time.monotonic()
        for key in keys:
            self._trim(self._failures, key, t - self.lockout).append(t)

    def succeed(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
