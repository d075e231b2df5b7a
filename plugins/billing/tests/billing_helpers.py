"""Helpers the billing tests share: servers with the test node pack and plans, signed-in users."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import entry_points
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.fernet import Fernet
from safetensors.numpy import save_file

from comfy_kernel.plugins import ENTRY_POINT_GROUPS
from comfy_kernel.testing import TEST_POSTGRES, ServerProcess, server_database


def _multiuser_on_the_storage_layer() -> bool:
    """Whether the multiuser plugin keeps its tables in the kernel's database (then it runs on PostgreSQL too)."""
    try:
        from comfy_kernel_multiuser import plugin
    except ImportError:
        return False
    return hasattr(plugin, "ck_migrations")


#: Tests with ``--auth`` servers: the multiuser plugin must be able to start on the run's database.
needs_multiuser = pytest.mark.skipif(
    os.environ.get("CK_TEST_DATABASE") == "postgresql" and not _multiuser_on_the_storage_layer(),
    reason="the multiuser plugin keeps its tables in SQLite (kernel.database_path) and cannot start on PostgreSQL")

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PLANS = os.path.join(DATA, "plans.toml")
ADMIN = ("admin", "admin-password-1")
SECRETS_KEY = Fernet.generate_key().decode()


def disable_all_but(*keep: str) -> list[str]:
    others = sorted({ep.name for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)} - set(keep))
    return ["--disable-plugins", ",".join(others)] if others else []


def prepare_base(base: Any) -> str:
    """A base directory with the test node pack and one small (real) checkpoint file."""
    base = str(base)
    target = os.path.join(base, "custom_nodes", "billing_nodes")
    if not os.path.isdir(target):
        shutil.copytree(os.path.join(DATA, "billing_nodes"), target, ignore=shutil.ignore_patterns("__pycache__"))
    ckpt = os.path.join(base, "models", "checkpoints")
    os.makedirs(ckpt, exist_ok=True)
    rng = np.random.default_rng(0)
    save_file({"layer.weight": rng.standard_normal((8, 8)).astype(np.float32),
               "layer.bias": rng.standard_normal(8).astype(np.float32)}, os.path.join(ckpt, "tiny.safetensors"))
    return base


def workflow(value: int, seconds: float, width: int = 8, height: int = 8, batch: int = 1) -> dict:
    """Load a model, sleep, save images: every metered quantity is non-trivial (``value`` defeats the cache)."""
    return {"1": {"class_type": "BillingLoadModel", "inputs": {"ckpt_name": "tiny.safetensors"}},
            "2": {"class_type": "BillingSleep", "inputs": {"value": value, "seconds": seconds, "model": ["1", 0]}},
            "3": {"class_type": "BillingImage", "inputs": {"value": ["2", 0], "width": width, "height": height,
                                                          "batch_size": batch}}}


def cli(base: Any, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """A ``comfy-kernel`` command on the database of the test server with ``base`` (as ServerProcess picks it)."""
    env = dict(os.environ)
    if os.environ.get(TEST_POSTGRES):
        env["COMFY_KERNEL_DATABASE"] = server_database(base)
    return subprocess.run([sys.executable, "-m", "comfy_kernel.cli", *args, "--base-directory", str(base)],
                          input=stdin, capture_output=True, text=True, timeout=120, cwd=str(base), env=env)


class User:
    """A signed-in user of an ``--auth`` server (cookie session plus CSRF token)."""

    def __init__(self, url: str, username: str, password: str):
        self.client = httpx.Client(base_url=url, timeout=60.0)
        r = self.client.post("/api/auth/session", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        self.client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        me = self.client.get("/api/user").json()
        self.id: str = me["id"]
        self.workspace_id: str = me["workspace_id"]
        self.account = f"ws:{self.workspace_id}"

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.put(path, **kw)

    def api_key(self) -> str:
        r = self.post("/api/workspace/api-keys", json={"name": "tests"})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def queue(self, prompt: dict, **body: Any) -> httpx.Response:
        return self.post("/api/prompt", json={"prompt": prompt, **body})

    def wait(self, prompt_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.get(f"/api/history/{prompt_id}").json()
            if body:
                return body[prompt_id]
            time.sleep(0.05)
        raise TimeoutError(prompt_id)

    def usage_of(self, prompt_id: str, timeout: float = 10) -> list[dict]:
        """The metered runs of a prompt (the charge is written a moment after history)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [p for p in self.get("/api/billing/usage", params={"view": "prompts"}).json()["prompts"]
                    if p["prompt_id"] == prompt_id]
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def close(self) -> None:
        self.client.close()


def create_admin(base: Any) -> None:
    os.makedirs(str(base), exist_ok=True)
    done = cli(base, "users", "create", "--admin", "--username", ADMIN[0], "--password-stdin", stdin=ADMIN[1] + "\n")
    assert done.returncode == 0, done.stderr


def new_user(admin: User, url: str, username: str) -> User:
    password = f"pw-{username}-secret"
    r = admin.post("/api/users", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return User(url, username, password)


def auth_server(base: Any, *args: str, port: int | None = None) -> ServerProcess:
    env = {"COMFY_KERNEL_SECRETS_KEY": SECRETS_KEY}
    return ServerProcess(base, "--auth", "--auth-rate-limit", "10000", "--auth-max-failures", "1000", "--cpu",
                         "--billing", "--billing-config", PLANS, *disable_all_but("multiuser", "billing"), *args,
                         env=env, port=port).start()


def wait_running(user: User, prompt_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = user.get("/api/queue").json()["queue_running"]
        if any(item[1] == prompt_id for item in running):
            return
        time.sleep(0.02)
    raise TimeoutError(prompt_id)
