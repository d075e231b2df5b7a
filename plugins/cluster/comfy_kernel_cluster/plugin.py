"""The cluster plugin's hooks: the ``--role``/``--nats`` options, the ``worker`` command,
the front-end executor and ``GET /api/cluster``."""

from __future__ import annotations

import argparse
from typing import Any

from comfy_kernel import hookimpl

from .subjects import DEFAULT_ACK_WAIT, Names


def _add_cluster_arguments(parser: argparse.ArgumentParser, *, role: bool) -> None:
    group = parser.add_argument_group("cluster")
    if role:
        group.add_argument("--role", choices=("all", "api"), default="all",
                           help="all: queue and workers in this process (default); api: HTTP/WebSocket "
                                "front-end only, prompts run on `comfy-kernel worker` processes (needs --nats)")
    group.add_argument("--nats", default=None, metavar="URL", help="NATS server of the cluster, e.g. nats://host:4222")
    group.add_argument("--nats-prefix", default="ck", metavar="NAME",
                       help="prefix of the cluster's subjects, stream and buckets (several clusters, one NATS)")
    group.add_argument("--ack-wait", type=float, default=DEFAULT_ACK_WAIT, metavar="SECONDS",
                       help="how long a silent worker keeps a prompt before another worker takes it over")
    group.add_argument("--object-store", default=None, metavar="s3://BUCKET/PREFIX",
                       help="keep input, output and temp files in this S3-compatible bucket, for machines that "
                            "share no directory (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
    group.add_argument("--object-store-endpoint", default=None, metavar="URL",
                       help="the S3-compatible service when it is not AWS, e.g. http://minio:9000 (path-style)")


@hookimpl
def ck_add_arguments(parser: Any) -> None:
    if parser.prog.split()[-1] == "serve":
        _add_cluster_arguments(parser, role=True)


@hookimpl
def ck_add_commands(subparsers: Any) -> None:
    from comfy_kernel.config import add_server_arguments

    worker = subparsers.add_parser("worker", help="run this machine's workers for a cluster (no HTTP)",
                                   description="Pull prompts from the cluster's NATS JetStream queue and run them.")
    add_server_arguments(worker)
    _add_cluster_arguments(worker, role=False)

    def run(args: argparse.Namespace) -> int:
        from .worker import run_worker

        return run_worker(args)

    worker.set_defaults(func=run)


@hookimpl
def ck_migrations(kernel: Any) -> list[Any]:
    """The leases table, in every process that has the plugin (the ``worker`` command and ``serve`` alike: one
    schema whatever role a process runs)."""
    from .migrations import CLUSTER

    return [CLUSTER]


@hookimpl
def ck_startup(kernel: Any) -> None:
    """Put the object store behind the input, output and temp folders (``--object-store``).

    A store that cannot be reached stops the process: a front-end or worker
    without it would hand out names and files the others never see.
    """
    url = getattr(kernel.config, "object_store", None)
    if not url:
        return
    from .objectstore import ObjectStore, ObjectStoreError

    if getattr(kernel.config, "role", None) == "all":  # only the worker command has no --role
        raise SystemExit("--object-store is for a cluster's machines: comfy-kernel serve --role api, "
                         "comfy-kernel worker")
    store = ObjectStore.from_url(url, getattr(kernel.config, "object_store_endpoint", None))
    try:
        store.start()
    except ObjectStoreError as exc:
        raise SystemExit(f"--object-store {url}: {exc}") from None
    kernel.folders.remote = store


@hookimpl
def ck_shutdown(kernel: Any) -> None:
    store = kernel.folders.remote
    if store is not None and hasattr(store, "stop"):
        store.stop()


@hookimpl
def ck_make_executor(kernel: Any) -> Any:
    config = kernel.config
    if getattr(config, "role", "all") != "api":
        return None
    if not getattr(config, "nats", None):
        raise SystemExit("--role api needs --nats URL")
    from .frontend import ClusterExecutor

    return ClusterExecutor(kernel, config.nats, Names(config.nats_prefix), config.ack_wait)


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    """``GET /api/cluster`` on front-ends only: a single-process server keeps its routes as they were."""
    if getattr(kernel.config, "role", "all") != "api":
        return
    from comfy_kernel.http import error_response, json_response

    @routes.get("/api/cluster")
    async def cluster(request: Any) -> Any:
        """The workers, devices, load and versions; admins only when an auth plugin signs callers in."""
        identity = getattr(request.state, "identity", None)
        if identity is not None and identity.authenticated and not identity.is_admin:
            return error_response(403, "Only an administrator may see the cluster", "forbidden")
        executor = kernel.executor
        workers = await executor.cluster_workers() if hasattr(executor, "cluster_workers") else []
        return json_response({"role": getattr(kernel.config, "role", "all"), "workers": workers,
                              "queue_remaining": kernel.queue_remaining()})

    @routes.get("/metrics")
    async def metrics(request: Any) -> Any:
        """Queue depth, prompts finished, per-worker load and device memory (Prometheus text format)."""
        from starlette.responses import Response

        from .metrics import render

        executor = kernel.executor
        workers = await executor.cluster_workers() if hasattr(executor, "cluster_workers") else []
        return Response(render(executor, workers), media_type="text/plain; version=0.0.4")
