"""``comfy-kernel serve`` as a process: URL printed, clean stop, light start-up, fresh install."""

from __future__ import annotations

import ast
import os
import pathlib
import signal
import subprocess
import sys
import time

import httpx
import pytest

from comfy_kernel.testing import free_port
from tests.conftest import KERNEL_ONLY

REPO = pathlib.Path(__file__).resolve().parents[2]


def _spawn(base, python=sys.executable, *extra):
    port = free_port()
    cmd = [python, "-m", "comfy_kernel.cli", "serve", "--port", str(port), "--base-directory", str(base), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=base,
                            stdin=subprocess.DEVNULL)
    return proc, port


def _wait_url(proc) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        for marker in ("To see the GUI go to:", "The API is at:"):  # with and without a frontend
            if marker in line:
                return line.split(marker)[1].strip()
        if not line and proc.poll() is not None:
            break
    raise AssertionError("the server never printed its URL")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_prints_url_and_stops_cleanly(tmp_path, sig):
    base = tmp_path / "base"
    base.mkdir()
    (base / "temp").mkdir()
    (base / "temp" / "stale.png").write_bytes(b"x")
    proc, port = _spawn(base, sys.executable, *KERNEL_ONLY)
    try:
        url = _wait_url(proc)
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/system_stats").status_code == 200
        assert not (base / "temp" / "stale.png").exists()  # temp is wiped at start-up
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (base / "temp").exists()  # and removed at a clean exit


def test_kernel_import_does_not_import_torch():
    code = ("import sys, comfy_kernel.app, comfy_kernel.server, comfy_kernel.cli, comfy_kernel.kernel;"
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_kernel_imports_no_plugin():
    plugin_packages = {p.name.replace("-", "_") for p in (REPO / "plugins").glob("*/comfy_kernel_*")}
    plugin_packages |= {f"comfy_kernel_{p.name}" for p in (REPO / "plugins").iterdir() if p.is_dir()}
    offenders = []
    for path in (REPO / "kernel" / "comfy_kernel").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in plugin_packages]
    assert offenders == []


@pytest.mark.slow
def test_fresh_install_serves_every_kernel_route(tmp_path):
    """``pip install -e .`` alone, in a clean venv, gives a server that answers every kernel route."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "-e", str(REPO)], capture_output=True,
                             text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    check = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "True"  # the kernel alone needs no torch
    base = tmp_path / "base"
    base.mkdir()
    proc, port = _spawn(base, python)
    try:
        url = _wait_url(proc)
        routes = ["/system_stats", "/features", "/object_info", "/object_info/X", "/embeddings", "/models",
                  "/models/checkpoints", "/experiment/models", "/experiment/models/checkpoints",
                  "/view_metadata/checkpoints?filename=x.safetensors", "/view?filename=x.png",
                  "/internal/folder_paths", "/internal/files/input", "/internal/logs", "/internal/logs/raw",
                  "/health", "/plugins", "/prompt", "/queue", "/history"]
        for route in routes:
            for prefix in ("", "/api"):
                if route.startswith("/internal") and prefix:
                    continue
                r = httpx.get(url + prefix + route, timeout=30)
                assert r.status_code < 500, (route, r.status_code)
                if route in ("/system_stats", "/features", "/object_info", "/models", "/internal/folder_paths"):
                    assert r.status_code == 200, route
        r = httpx.post(url + "/upload/image", files={"image": ("a.png", b"png-bytes", "image/png")})
        assert r.json()["name"] == "a.png"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert os.path.isfile(base / "input" / "a.png")
