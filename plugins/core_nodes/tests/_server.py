"""A real comfy-kernel server with the tiny checkpoint, and a WebSocket client that runs prompts on it.

Shared by the parity tests and the node tests that go through HTTP: the
server's base directory gets ``models/checkpoints/<tiny checkpoint>`` (a
symlink to the cached file, as a shared model store would be linked in) and
``input/ref_input_64.png``.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from comfy_kernel.testing import ServerProcess


def prepare_base(base: Path, checkpoint: Path, reference: Path) -> Path:
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    link = checkpoints / checkpoint.name
    if not link.exists():
        link.symlink_to(checkpoint)
    (base / "input").mkdir(parents=True, exist_ok=True)
    shutil.copy(reference / "inputs" / "ref_input_64.png", base / "input" / "ref_input_64.png")
    return base


class PromptClient:
    """One WebSocket connection; queues API prompts and waits for ``execution_success``."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client_id = uuid.uuid4().hex
        self._ctx = server.ws(self.client_id)
        self.ws = self._ctx.__enter__()

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)

    def run(self, prompt: dict[str, Any], timeout: float = 120.0, **extra: Any) -> tuple[str, list[tuple[float, str, Any]]]:
        """Queue ``prompt``; returns its id and the (time, type, data) messages up to success."""
        r = self.server.post("/prompt", json={"prompt": prompt, "client_id": self.client_id, **extra})
        assert r.status_code == 200, r.text
        prompt_id = r.json()["prompt_id"]
        messages: list[tuple[float, str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            now = time.perf_counter()
            if isinstance(raw, bytes):
                messages.append((now, "binary", raw))
                continue
            msg = json.loads(raw)
            data = msg.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            messages.append((now, msg["type"], data))
            if msg["type"] == "execution_success":
                return prompt_id, messages
            if msg["type"] in ("execution_error", "execution_interrupted"):
                raise AssertionError(f"prompt failed: {json.dumps(data)[:4000]}")

    def images(self, messages: list[tuple[float, str, Any]]) -> list[tuple[dict[str, str], bytes]]:
        """Every image the run's ``executed`` messages list, in order, fetched through /view."""
        out = []
        for _, kind, data in messages:
            if kind != "executed":
                continue
            for item in (data.get("output") or {}).get("images", []):
                r = self.server.get("/view", params=item)
                assert r.status_code == 200, r.text
                out.append((item, r.content))
        return out


def png_pixels(data: bytes) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
