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
