"""A webhook receiver on 127.0.0.1 for the tests: records every POST and answers as told."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """``status_for(request_number)`` decides each answer (200 unless told otherwise)."""

    def __init__(self, status_for: Callable[[int], int] | None = None):
        self.requests: list[dict[str, Any]] = []
        self.status_for = status_for or (lambda n: 200)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    n = len(receiver.requests)
                    status = receiver.status_for(n)
                    receiver.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in
                                                                             self.headers.items()},
                                              "body": body, "json": json.loads(body), "at": time.time(),
                                              "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def received(self, event: str | None = None, ok_only: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            items = list(self.requests)
        return [r for r in items if (event is None or r["json"]["type"] == f"job.{event}")
                and (not ok_only or 200 <= r["status"] < 300)]

    def wait_for(self, count: int, event: str | None = None, timeout: float = 30.0,
                 ok_only: bool = False) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(event, ok_only)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} {event or ''} webhook(s), got {len(self.received(event))}: "
                             f"{[r['json']['type'] for r in self.received()]}")
