"""Start-up to ready, and the first prompt after ready, beside ComfyUI, in interleaved rounds.

* Start-up: spawn the server, poll ``GET /system_stats`` every 10 ms; the time
  to the first 200 (how ComfyUI's figure in shared/reference/README.md §7 was
  taken).
* First prompt: as soon as the server is ready (or ``--first-after`` seconds
  later) a client opens its WebSocket and HTTP connection (one GET
  ``/system_stats``) and POSTs one trivial prompt; its
  POST-to-``execution_success`` time is compared with the median of the 20
  warm prompts that follow (same graph, other values). Each graph gets its own
  start: the primitive graph needs no torch, the image graph does (comfy-kernel
  imports torch in its background warm-up, after it is ready). Then again with
  starts where the first prompt waits until comfy-kernel's warm-up is done
  (ComfyUI imports everything before it answers, so for it the two are one).
* Warm-up: when comfy-kernel's ``GET /api/health`` first says ``"warmup":
  "done"``, from the spawn.

The installs are those of ``common.py`` (``kernel`` gets bench/nodepack's five
nodes for its prompts). Each round starts every install (and ComfyUI, with
``--comfyui PATH``) once per graph, in a rotated order.

    python bench/startup.py [--setups kernel,readme,default,all] [--comfyui PATH] [--rounds 5] [--first-after S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time

from common import GRAPHS, HERE, Client, Server, comfyui_server, kernel_server, load, stats


async def first_prompt(server: Server, graph: str, delay: float, when_warm: bool) -> tuple[float, float]:
    """(first prompt s, median of 20 warm prompts s)."""
    make = GRAPHS[graph]
    if delay:
        await asyncio.sleep(delay)
    if when_warm:
        await asyncio.to_thread(server.wait_warm)
    async with Client(server.url) as c:
        await c.get_ms("/system_stats")  # the client's HTTP connection is open, as any real client's is
        first, _ = await c.run(make(31_000))
        warm = [(await c.run(make(31_001 + i)))[0] for i in range(20)]
    return first, statistics.median(warm)


def warmup_done(server: Server, spawn_to_ready: float, started: float) -> float | None:
    """Seconds from spawn until the warm-up reported done (None for ComfyUI)."""
    if server.name == "ComfyUI":
        return None
    server.wait_warm()
    return spawn_to_ready + (time.perf_counter() - started)


def one(make_server, graph: str, delay: float, when_warm: bool) -> dict[str, float | None]:
    server: Server = make_server()
    try:
        ready = server.start()
        started = time.perf_counter()
        first, warm = asyncio.run(first_prompt(server, graph, delay, when_warm))
        done = warmup_done(server, ready, started)
        return {"ready": ready, "first": first, "warm": warm, "warmup_done": done}
    finally:
        server.cleanup()


MODES = {"ready": "after ready", "warm": "after the warm-up"}


def makers(setups: list[str], comfyui: str | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for setup in setups:
        def make(setup: str = setup) -> Server:
            server = kernel_server(setup)
            if setup == "kernel":  # no core_nodes: the benchmark's own five nodes
                shutil.copytree(os.path.join(HERE, "nodepack", "bench_nodes"),
                                os.path.join(server.base, "custom_nodes", "bench_nodes"))
            return server
        out[f"comfy-kernel {setup}"] = make
    if comfyui:
        out["ComfyUI"] = lambda: comfyui_server(comfyui)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default="kernel,readme,default,all")
    parser.add_argument("--comfyui", metavar="PATH", help="a ComfyUI checkout to start alongside")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--first-after", type=float, default=0.0, metavar="S",
                        help="wait this long after ready before the first prompt (default: none)")
    parser.add_argument("--json", help="write every start's raw figures here")
    args = parser.parse_args()
    targets = makers([s.strip() for s in args.setups.split(",") if s.strip()], args.comfyui)
    names = list(targets)
    runs: dict[str, dict[str, list[dict]]] = {n: {f"{g} {m}": [] for g in GRAPHS for m in MODES} for n in names}
    print(f"{load()}", flush=True)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for graph in GRAPHS:
                for mode in ("ready",) if name == "ComfyUI" else MODES:
                    runs[name][f"{graph} {mode}"].append(one(targets[name], graph, args.first_after, mode == "warm"))
        print(f"  round {r + 1}/{args.rounds} done; {load()}", flush=True)

    print(f"\n{'server':<26} {'figure':<44} {'min':>8} {'median':>8}")
    comfy_ready = None
    if "ComfyUI" in runs:
        comfy_ready = statistics.median([x["ready"] for rows in runs["ComfyUI"].values() for x in rows])
    for name in names:
        every = [x for rows in runs[name].values() for x in rows]
        low, med = stats([x["ready"] for x in every])
        extra = f"  {comfy_ready / med:.1f}x faster than ComfyUI" if comfy_ready and name != "ComfyUI" else ""
        print(f"{name:<26} {'start-up to first /system_stats (s)':<44} {low:>8.3f} {med:>8.3f}{extra}")
        done = [x["warmup_done"] for x in every if x["warmup_done"] is not None]
        if done:
            low, med = stats(done)
            print(f"{name:<26} {'warm-up done, from spawn (s)':<44} {low:>8.3f} {med:>8.3f}")
        for key, rows in runs[name].items():
            if not rows:
                continue
            graph, mode = key.split()
            low, med = stats([x["warm"] * 1000 for x in rows])
            print(f"{name:<26} {f'warm {graph} prompt (ms)':<44} {low:>8.1f} {med:>8.1f}")
            low, med = stats([x["first"] * 1000 for x in rows])
            print(f"{name:<26} {f'first {graph} prompt {MODES[mode]} (ms)':<44} {low:>8.1f} {med:>8.1f}")
            low, med = stats([x["first"] / x["warm"] for x in rows])
            print(f"{name:<26} {'  first / warm (target <= 1.2)':<44} {low:>8.2f} {med:>8.2f}")
    print(f"\n{args.rounds} rounds; first prompt {args.first_after:g} s after ready or after the warm-up; "
          f"at the end: {load()}")
    print("targets: start-up to ready < 1 s; first prompt after ready within 1.2x of a warm prompt")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
