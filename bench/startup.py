"""Start-up time: spawn ``comfy-kernel serve``, poll /system_stats every 10 ms.

Measured as ComfyUI's figure was (shared/reference/README.md §7): time from
process spawn to the first 200 on GET /system_stats, median of 5 starts.
Usage: ``python bench/startup.py [--runs 5] [-- extra serve flags]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from comfy_kernel.testing import free_port

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "comfyui_speed.json")


def one_start(extra: list[str]) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as base:
        cmd = [sys.executable, "-m", "comfy_kernel.cli", "serve", "--port", str(port), "--base-directory", base,
               *extra]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=base)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=1) as r:
                        if r.status == 200:
                            return time.perf_counter() - start
                except OSError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("server exited during start-up")
                if time.perf_counter() - start > 60:
                    raise TimeoutError("no answer in 60 s")
                time.sleep(0.01)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    times = [one_start(args.extra) for _ in range(args.runs)]
    median = statistics.median(times)
    print(f"start-up to first /system_stats: median {median:.3f} s over {args.runs} "
          f"(min {min(times):.3f}, max {max(times):.3f})")
    try:
        with open(REFERENCE) as f:
            ref = json.load(f)["startup_median_s"]
        print(f"ComfyUI on this machine: {ref:.3f} s -> comfy-kernel is {ref / median:.1f}x faster")
    except OSError:
        print("(reference figures not found beside the checkout)")
    print("target: under 1 s with the kernel alone:", "met" if median < 1.0 else "NOT met")


if __name__ == "__main__":
    main()
