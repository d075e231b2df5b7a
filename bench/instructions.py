"""Instructions the server executes per trivial prompt, per install (needs valgrind).

Timings on a shared machine swing with the other processes' load; an
instruction count does not. Each install's server runs under callgrind with
instrumentation off; after a few warm-up prompts it is switched on around N
prompts (``callgrind_control -i on/off``) and the count, over every thread,
is divided by N. Runs repeat within about 1.5 %. Kernel time (system calls)
is not counted, and neither is waiting: this measures the CPU work the server
code asks for, which is what an installed plugin could add.

    python bench/instructions.py [--setups core,core+NAME...,default,all] [--prompts 60] [--graph primitive]

Default: kernel + core_nodes, then each installed plugin added alone, the
default install and every plugin; each figure is also given as a difference
from kernel + core_nodes. Servers run with ``--cpu --no-warmup`` (under
valgrind an import of torch takes minutes; the primitive graph needs none).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import GRAPHS, Client, installed_plugins, load, setup_flags

from comfy_kernel.testing import free_port


def count(setup: str, prompts: int, graph: str) -> float:
    """Millions of instructions per prompt."""
    base = tempfile.mkdtemp(prefix="ck-bench-cg-")
    out = os.path.join(base, "callgrind.out")
    port = free_port()
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
           sys.executable, "-m", "comfy_kernel.cli", "serve", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", base, "--cpu", "--no-warmup", *setup_flags(setup)]
    log = open(os.path.join(base, "server.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=base)
    url = f"http://127.0.0.1:{port}"
    make = GRAPHS[graph]
    try:
        deadline = time.monotonic() + 900
        while True:
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=60)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{setup}: the server did not start under valgrind") from None
                time.sleep(0.5)

        async def run() -> None:
            async with Client(url) as c:
                for i in range(5):
                    await c.run(make(40_000 + i))
                subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
                for i in range(prompts):
                    await c.run(make(41_000 + i))
                subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)

        asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(600)
        log.close()
    total = 0
    for path in glob.glob(out + "*"):
        with open(path) as f:
            for line in f:
                if line.startswith("totals:"):
                    total += int(line.split()[1])
    shutil.rmtree(base, ignore_errors=True)
    return total / prompts / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", help="comma-separated installs (see common.py)")
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--graph", choices=list(GRAPHS), default="primitive")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is needed")
    if args.setups:
        setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    else:
        setups = ["core"] + [f"core+{p}" for p in installed_plugins() if p != "core_nodes"] + ["default", "all"]
    print(f"{load()}", flush=True)
    results = {}
    for setup in setups:
        results[setup] = count(setup, args.prompts, args.graph)
        print(f"  {setup}: {results[setup]:.2f} M", flush=True)
    base = results.get("core")
    print(f"\n{'install':<28} {'M instructions/prompt':>22} {'vs core':>9}   (trivial {args.graph} graph)")
    for setup, value in results.items():
        diff = f"{(value / base - 1) * 100:+8.1f}%" if base else ""
        print(f"{setup:<28} {value:>22.2f} {diff:>9}")
    print("run-to-run noise is about 1.5 %; target: each installed plugin adds < 3 %")


if __name__ == "__main__":
    main()
