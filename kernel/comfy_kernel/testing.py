"""Helpers for end-to-end tests: a real server process on 127.0.0.1.

Used by the kernel's and the plugins' tests alike::

    with ServerProcess(tmp_path) as server:
        r = server.get("/api/system_stats")
        with server.ws(client_id="abc") as ws:
            ...

The process is ``python -m comfy_kernel.cli serve`` with its own base
directory; it is stopped with SIGTERM (then SIGKILL) by its PID only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, base_dir: Any, *args: str, env: dict[str, str] | None = None,
                 startup_timeout: float = 60.0, port: int | None = None, warmup: bool = False):
        self.base_dir = str(base_dir)
        self.args = list(args)
        # The background warm-up imports torch in every server; tests that do not
        # measure it run without (a test can still pass warmup=True or its own env).
        self.env = {**({} if warmup else {"COMFY_KERNEL_NO_WARMUP": "1"}), **(env or {})}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60.0)
        self.log_path = os.path.join(self.base_dir, "server.log")

    def start(self) -> ServerProcess:
        os.makedirs(self.base_dir, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        cmd = [sys.executable, "-m", "comfy_kernel.cli", "serve", "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", self.base_dir, *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.base_dir, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.client.get("/system_stats", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server did not start in {self.startup_timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, kill: bool = False) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.proc = None
        with contextlib.suppress(Exception):
            self._log.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(kill=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.client.close()

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, **kw)

    @contextlib.contextmanager
    def ws(self, client_id: str | None = None, **kw: Any) -> Iterator[Any]:
        """A synchronous WebSocket client (``websockets.sync``)."""
        from websockets.sync.client import connect

        url = f"ws://127.0.0.1:{self.port}/ws" + (f"?clientId={client_id}" if client_id else "")
        with connect(url, max_size=None, **kw) as conn:
            yield conn
