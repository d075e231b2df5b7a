"""A minimal headless-Chromium driver over the DevTools protocol (no extra packages).

Starts Debian's ``/usr/bin/chromium`` with a fresh profile, connects to its
page over a WebSocket (``websockets`` ships with the kernel's uvicorn), blocks
every request that is not to loopback, and records console errors, page
exceptions and failed loads so a test can assert a clean boot.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from typing import Any

from websockets.sync.client import connect

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None


class Browser:
    """One Chromium process with one page; use as a context manager."""

    def __init__(self, width: int = 1600, height: int = 900):
        self.size = (width, height)
        self.profile = tempfile.mkdtemp(prefix="ck-chromium-")
        self.proc: subprocess.Popen | None = None
        self.ws: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None

    # --- process and connection --------------------------------------------

    def __enter__(self) -> Browser:
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.05)
        port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None).__enter__()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")
        self.call("Network.setBlockedURLs", urls=["https://*", "http://*:*@*"])
        self.call("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.ws is not None:
                self.ws.__exit__(None, None, None)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self) -> None:
        try:
            for raw in self.ws:
                message = json.loads(raw)
                with self._cond:
                    if "id" in message:
                        self._pending[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._cond.notify_all()
        except Exception:
            pass

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{method} got no answer in {timeout}s")
                self._cond.wait(left)
            message = self._pending.pop(msg_id)
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return message.get("result", {})

    # --- page helpers --------------------------------------------------------

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def reload(self, timeout: float = 30) -> None:
        """Reload and return once the old document is gone."""
        self.eval("window.__ckOldDocument = true")
        self.call("Page.reload", ignoreCache=True)
        self.wait_for("!window.__ckOldDocument", timeout)

    def eval(self, expression: str, timeout: float = 60) -> Any:
        """Evaluate JS in the page (promises awaited) and return its JSON value."""
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True,
                           awaitPromise=True, userGesture=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"page error evaluating {expression[:80]!r}: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.eval(expression)
            except RuntimeError as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {expression!r} (last: {last!r})")

    def press(self, key: str, code: str | None = None, key_code: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code or key,
                      windowsVirtualKeyCode=key_code, nativeVirtualKeyCode=key_code)

    def screenshot(self, path: str) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    # --- what went wrong -------------------------------------------------------

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out: list[str] = []
        with self._cond:
            events = list(self.events)
        for event in events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append("exception: " + (details.get("exception", {}).get("description") or details.get("text", "")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
                out.append("console.error: " + " ".join(str(a) for a in args))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"log: {entry.get('text', '')} {entry.get('url', '')}".strip())
        return out

    def requests(self) -> list[str]:
        with self._cond:
            return [e["params"]["request"]["url"] for e in self.events
                    if e.get("method") == "Network.requestWillBeSent"]

    def clear_events(self) -> None:
        with self._cond:
            self.events.clear()
