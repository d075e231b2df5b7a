"""Which executor a process gets: the single-process default stays the in-process queue."""

from __future__ import annotations

import pytest
from comfy_kernel_cluster.frontend import ClusterExecutor

from comfy_kernel.cli import build_parser
from comfy_kernel.execution import Executor
from comfy_kernel.plugins import PluginHost
from comfy_kernel.server import create_kernel


def parse(*argv: str):
    host = PluginHost(disabled={"core_nodes", "userdata", "manager", "assets", "hub", "multiuser", "compat",
                                "billing"})
    host.discover()
    return build_parser(host).parse_args(list(argv)), host


def test_serve_without_a_role_keeps_the_in_process_queue(tmp_path):
    args, host = parse("serve", "--base-directory", str(tmp_path))
    assert args.role == "all" and args.nats is None
    kernel = create_kernel(args, host)
    assert type(kernel.executor) is Executor


def test_role_api_puts_the_cluster_front_end_in_place(tmp_path):
    args, host = parse("serve", "--base-directory", str(tmp_path), "--role", "api", "--nats", "nats://127.0.0.1:1")
    kernel = create_kernel(args, host)
    assert isinstance(kernel.executor, ClusterExecutor) and kernel.executor.nats_url == "nats://127.0.0.1:1"


def test_role_api_without_nats_is_refused(tmp_path):
    args, host = parse("serve", "--base-directory", str(tmp_path), "--role", "api")
    with pytest.raises(SystemExit):
        create_kernel(args, host)


def test_worker_command_takes_the_server_and_cluster_options(tmp_path):
    args, _ = parse("worker", "--nats", "nats://127.0.0.1:4222", "--cpu", "--workers", "2", "--ack-wait", "5")
    assert (args.nats, args.cpu, args.workers, args.ack_wait) == ("nats://127.0.0.1:4222", True, 2, 5.0)


@pytest.mark.slow
def test_cluster_view_is_for_administrators_when_callers_sign_in(tmp_path):
    """A front-end with the multiuser plugin's --auth: GET /api/cluster answers its administrator, refuses
    a member (403) and a caller who is not signed in (401)."""
    import os
    import subprocess
    import sys

    import httpx
    from cluster_helpers import OTHER_PLUGINS, NatsServer
    from cryptography.fernet import Fernet

    from comfy_kernel.testing import TEST_POSTGRES, ServerProcess, database_for

    server = os.environ.get(TEST_POSTGRES)
    database = database_for(server, str(tmp_path / "db")) if server else str(tmp_path / "comfy-kernel.db")
    off = ",".join(p for p in OTHER_PLUGINS.split(",") if p != "multiuser")
    env = {"COMFY_KERNEL_SECRETS_KEY": Fernet.generate_key().decode()}
    base = tmp_path / "front"
    base.mkdir()
    for name, admin in (("boss", True), ("member", False)):
        made = subprocess.run([sys.executable, "-m", "comfy_kernel.cli", "users", "create", *(["--admin"] * admin),
                               "--username", name, "--password-stdin", "--base-directory", str(base),
                               "--database", database, "--disable-plugins", off],
                              input=f"{name}-password-1\n", capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        assert made.returncode == 0, made.stderr
    nats = NatsServer(tmp_path / "nats").start()
    front = ServerProcess(base, "--auth", "--role", "api", "--nats", nats.url, "--database", database,
                          "--disable-plugins", off, env=env, startup_timeout=120)
    try:
        front.start()
        answers = {}
        for name in ("boss", "member"):
            with httpx.Client(base_url=front.url, timeout=30) as client:
                signed = client.post("/api/auth/session", json={"username": name, "password": f"{name}-password-1"})
                assert signed.status_code == 200, signed.text
                answers[name] = client.get("/api/cluster")
        assert answers["boss"].status_code == 200 and answers["boss"].json()["role"] == "api"
        assert answers["member"].status_code == 403
        assert front.get("/api/cluster").status_code == 401
    finally:
        front.stop()
        front.client.close()
        nats.stop()
