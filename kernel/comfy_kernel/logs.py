"""Log capture for ``/internal/logs`` and the ``logs`` ws messages.

stdout and stderr are wrapped so each write call becomes an entry of a
300-entry ring buffer (a write starting with ``\\r`` replaces an unfinished
previous entry, so progress bars don't flood it). On flush, new entries go to
every subscribed client. Secret values of the configuration and URL passwords
are masked before anything is kept or printed.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections import deque
from datetime import datetime
from typing import Any

from .config import redact_text

MAX_ENTRIES = 300


class _Tee:
    def __init__(self, stream: Any, capture: LogCapture):
        self._stream = stream
        self._capture = capture

    def write(self, text: str) -> int:
        if isinstance(text, str):
            text = redact_text(text)
        self._capture.add(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()
        self._capture.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class LogCapture:
    _instance: LogCapture | None = None

    def __init__(self) -> None:
        self.entries: deque[dict[str, str]] = deque(maxlen=MAX_ENTRIES)
        self._pending: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.subscribers: set[str] = set()
        self._kernel: Any = None
        self._last_size: tuple[int, int] | None = None
        self._installed = False

    @classmethod
    def instance(cls) -> LogCapture:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def install(self) -> None:
        if not self._installed:
            sys.stdout = _Tee(sys.stdout, self)  # type: ignore[assignment]
            sys.stderr = _Tee(sys.stderr, self)  # type: ignore[assignment]
            self._installed = True

    def attach(self, kernel: Any) -> None:
        self._kernel = kernel

    def detach(self, kernel: Any) -> None:
        if self._kernel is kernel:
            self._kernel = None

    def add(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            if text.startswith("\r") and self.entries and not self.entries[-1]["m"].endswith("\n"):
                self.entries.pop()
                if self._pending:
                    self._pending.pop()
            entry = {"t": datetime.now().isoformat(), "m": text}
            self.entries.append(entry)
            if self.subscribers:
                self._pending.append(entry)

    def flush(self) -> None:
        kernel = self._kernel
        if kernel is None or not self.subscribers:
            return
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        size = self.terminal_size()
        changed = size if (size["cols"], size["rows"]) != self._last_size else None
        self._last_size = (size["cols"], size["rows"])
        for sid in list(self.subscribers):
            if sid not in kernel.ws.clients:
                self.subscribers.discard(sid)
                continue
            kernel.ws.send("logs", {"entries": pending, "size": changed}, sid)

    def text(self) -> str:
        return "".join(f"{e['t']} - {e['m']}" for e in list(self.entries))

    @staticmethod
    def terminal_size() -> dict[str, int]:
        size = shutil.get_terminal_size((80, 24))
        return {"cols": size.columns, "rows": size.lines}
