"""What the benchmarks share: installs to compare, servers to start, a client, the statistics.

Installs ("setups") are the plugins of this environment with the others
disabled by name (``--disable-plugins``), so one virtual environment with
every plugin gives each of them:

========== ==========================================================
kernel     the kernel alone
readme     kernel + core_nodes + userdata (the README's two-command install)
default    kernel + core_nodes + userdata + compat (what a ComfyUI user installs)
core       kernel + core_nodes
core+NAME  kernel + core_nodes + the plugin NAME (per-plugin cost)
all        every installed plugin
========== ==========================================================

ComfyUI runs from a checkout given with ``--comfyui PATH`` (its own
``.venv/bin/python`` if there is one), with ``--cpu``, stock nodes only
(``--disable-all-custom-nodes``) and a temporary base directory, as in
``shared/reference/README.md`` §7. The machine these run on is usually
shared: every script measures in interleaved rounds (A, B, A, B ...) and
prints the minimum and median of the rounds and the load average.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from comfy_kernel.plugins import ENTRY_POINT_GROUPS  # noqa: E402
from comfy_kernel.testing import free_port  # noqa: E402

NAMED_SETUPS = {
    "kernel": set(),
    "readme": {"core_nodes", "userdata"},
    "default": {"core_nodes", "userdata", "compat"},
    "core": {"core_nodes"},
}


def installed_plugins() -> list[str]:
    return sorted({ep.name for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)})


def setup_flags(setup: str) -> list[str]:
    """``serve`` flags that leave exactly the plugins of ``setup`` enabled."""
    installed = installed_plugins()
    if setup == "all":
        keep = set(installed)
    elif setup.startswith("core+"):
        keep = {"core_nodes", setup[len("core+"):]}
    elif setup in NAMED_SETUPS:
        keep = NAMED_SETUPS[setup]
    else:
        raise SystemExit(f"unknown setup {setup!r}")
    missing = keep - set(installed)
    if missing:
        raise SystemExit(f"setup {setup!r} needs plugins that are not installed: {', '.join(sorted(missing))}")
    off = [name for name in installed if name not in keep]
    return ["--disable-plugins", ",".join(off)] if off else []


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


def stats(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


# --- servers ---------------------------------------------------------------------------------------


class Server:
    """A server process on 127.0.0.1 in its own temporary base directory, stopped by its PID.

    Servers may write bytecode caches whatever the caller's environment says, as an installed server
    does: without them every start compiles every module from source again (about a second for
    either server), which no user pays after the first start.
    """

    def __init__(self, name: str, cmd: list[str], base: str, port: int, env: dict[str, str] | None = None,
                 cwd: str | None = None):
        self.name, self.cmd, self.base, self.port = name, cmd, base, port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.cwd = cwd or base
        self.proc: subprocess.Popen | None = None
        self.ready_s = 0.0

    def start(self, timeout: float = 300.0, poll: float = 0.01) -> float:
        """Spawn and poll ``/system_stats`` every ``poll`` s; returns the seconds until the first 200."""
        log = open(os.path.join(self.base, "server.log"), "ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env,
                                     stdin=subprocess.DEVNULL)
        log.close()
        while True:
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=5) as r:
                    if r.status == 200:
                        self.ready_s = time.perf_counter() - started
                        return self.ready_s
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up; see {self.base}/server.log")
            if time.perf_counter() - started > timeout:
                self.stop()
                raise TimeoutError(f"{self.name}: no answer in {timeout} s")
            time.sleep(poll)

    def get_json(self, path: str) -> Any:
        import json

        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def wait_warm(self, timeout: float = 300.0) -> float:
        """comfy-kernel: wait until the background warm-up is done; returns the seconds waited."""
        started = time.perf_counter()
        import urllib.error

        while self.name != "ComfyUI" and time.perf_counter() - started < timeout:
            try:
                if self.get_json("/api/health").get("warmup", "done") in ("done", "off"):  # older builds: none
                    break
            except urllib.error.HTTPError:  # a checkout older than the warm-up has no /api/health
                break
            time.sleep(0.05)
        return time.perf_counter() - started

    def cpu_seconds(self) -> float:
        """CPU time of every thread of the process so far (from /proc, nanosecond resolution)."""
        assert self.proc is not None
        total = 0
        task_dir = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return total / 1e9

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def kernel_server(setup: str, *extra: str, warmup: bool = True, label: str | None = None,
                  base: str | None = None) -> Server:
    base = base or tempfile.mkdtemp(prefix="ck-bench-")
    port = free_port()
    cmd = [sys.executable, "-m", "comfy_kernel.cli", "serve", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", base, *setup_flags(setup), *([] if warmup else ["--no-warmup"]), *extra]
    return Server(label or f"comfy-kernel {setup}", cmd, base, port)


def checkout_server(path: str, setup: str, *extra: str) -> Server:
    """comfy-kernel from another checkout (an older commit, say), run by this interpreter.

    Its ``kernel`` and ``plugins/*`` folders go first on ``PYTHONPATH``, so its
    code replaces this environment's editable installs; the plugins it lacks
    are disabled by name, which ``serve`` accepts.
    """
    path = os.path.abspath(path)
    plugins = sorted(os.path.join(path, "plugins", p) for p in os.listdir(os.path.join(path, "plugins")))
    env = {"PYTHONPATH": os.pathsep.join([os.path.join(path, "kernel"), *plugins])}
    base = tempfile.mkdtemp(prefix="ck-bench-")
    port = free_port()
    cmd = [sys.executable, "-m", "comfy_kernel.cli", "serve", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", base, *setup_flags(setup), *extra]
    return Server(f"{os.path.basename(path)} {setup}", cmd, base, port, env=env)


def comfyui_server(path: str, *extra: str) -> Server:
    base = tempfile.mkdtemp(prefix="comfyui-bench-")
    for sub in ("custom_nodes", "user", "input", "output"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    python = os.path.join(path, ".venv", "bin", "python")
    if not os.path.isfile(python):
        python = sys.executable
    port = free_port()
    cmd = [python, os.path.join(path, "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-all-custom-nodes", "--base-directory", base, *extra]
    return Server("ComfyUI", cmd, base, port, cwd=path)


def floor_server(inline: bool = False) -> Server:
    """``floor_server.py``: what the protocol and a durable queue cost on this stack, with no executor."""
    base = tempfile.mkdtemp(prefix="ck-floor-")
    port = free_port()
    cmd = [sys.executable, os.path.join(HERE, "floor_server.py"), "--port", str(port),
           "--database", os.path.join(base, "floor.db"), *(["--inline"] if inline else [])]
    return Server("floor, inline" if inline else "floor, worker thread", cmd, base, port)


# --- the client ------------------------------------------------------------------------------------


def trivial_image(c: int) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": c}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def trivial_primitive(v: int) -> dict:
    return {"1": {"class_type": "PrimitiveInt", "inputs": {"value": v}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def chain(n: int, color: int) -> dict:
    """EmptyImage -> ``n`` x ImageInvert -> PreviewImage: the per-node cost, multiplied by ``n``."""
    p = {"0": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}}}
    for k in range(1, n + 1):
        p[str(k)] = {"class_type": "ImageInvert", "inputs": {"image": [str(k - 1), 0]}}
    p[str(n + 1)] = {"class_type": "PreviewImage", "inputs": {"images": [str(n), 0]}}
    return p


GRAPHS: dict[str, Callable[[int], dict]] = {"primitive": trivial_primitive, "image": trivial_image}


class Client:
    """As ComfyUI's reference figures were measured: one WebSocket ``/ws?clientId=<id>`` open,
    prompts POSTed with that client_id (aiohttp), done = the prompt's ``execution_success``."""

    def __init__(self, url: str):
        self.url = url
        self.client_id = uuid.uuid4().hex
        self.done: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}

    async def __aenter__(self) -> Client:
        import aiohttp
        from websockets.asyncio.client import connect

        self.http = aiohttp.ClientSession(self.url, timeout=aiohttp.ClientTimeout(total=600))
        self.ws = await connect(self.url.replace("http", "ws") + f"/ws?clientId={self.client_id}", max_size=None)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.reader.cancel()
        await self.ws.close()
        await self.http.close()

    async def _read(self) -> None:
        import orjson

        async for raw in self.ws:
            if isinstance(raw, bytes):
                continue
            msg = orjson.loads(raw)
            kind, data = msg["type"], msg["data"]
            if kind in ("execution_success", "execution_error"):
                pid = data["prompt_id"]
                self.done[pid] = time.perf_counter()
                fut = self.waiters.get(pid)
                if fut is not None and not fut.done():
                    fut.set_result(kind)

    async def post(self, prompt: dict) -> str:
        import orjson

        pid = uuid.uuid4().hex
        self.waiters[pid] = asyncio.get_running_loop().create_future()
        body = orjson.dumps({"prompt": prompt, "client_id": self.client_id, "prompt_id": pid})
        async with self.http.post("/prompt", data=body, headers={"Content-Type": "application/json"}) as r:
            text = await r.read()
            assert r.status == 200, text
        return pid

    async def run(self, prompt: dict) -> tuple[float, float]:
        """(POST to success, POST alone) in seconds."""
        t0 = time.perf_counter()
        pid = await self.post(prompt)
        t_post = time.perf_counter() - t0
        kind = await self.waiters[pid]
        assert kind == "execution_success", kind
        return self.done[pid] - t0, t_post

    async def closed_loop(self, make: Callable[[int], dict], start: int, n: int) -> tuple[float, list[float]]:
        """Prompts/s and latencies when each prompt is sent once the previous one succeeded."""
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            lat.append((await self.run(make(start + i)))[0])
        return n / (time.perf_counter() - t0), lat

    async def burst(self, make: Callable[[int], dict], start: int, n: int) -> float:
        """Prompts/s when all are POSTed without waiting (open loop): n / (last success - first POST)."""
        t0 = time.perf_counter()
        pids = [await self.post(make(start + i)) for i in range(n)]
        kinds = await asyncio.gather(*(self.waiters[p] for p in pids))
        assert all(k == "execution_success" for k in kinds), kinds
        return n / (max(self.done[p] for p in pids) - t0)

    async def get_ms(self, path: str) -> float:
        t = time.perf_counter()
        async with self.http.get(path) as r:
            await r.read()
            assert r.status == 200
        return (time.perf_counter() - t) * 1000


def ratio(ours: float, theirs: float, higher_is_better: bool) -> float:
    if not ours or not theirs:
        return float("nan")
    return ours / theirs if higher_is_better else theirs / ours
