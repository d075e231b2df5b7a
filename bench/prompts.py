"""Trivial prompts and ``GET /object_info``, beside ComfyUI, in interleaved rounds.

The figures of the root README's table (shared/reference/README.md §7 says how
ComfyUI's were taken; this measures both sides the same way, now):

* trivial primitive graph (PrimitiveInt -> PreviewAny) and trivial image
  graph (EmptyImage 8x8 -> ImageInvert -> PreviewImage), each value different
  so nothing is cached;
* closed loop: each prompt POSTed when the previous one's ``execution_success``
  arrived; open loop ("burst"): all POSTed without waiting, rate = prompts /
  (last success - first POST);
* ``GET /object_info``: median of 20 after one warm-up request, and the
  server's CPU time per request over 100 more (the wall time of a 300 KB
  answer is mostly the client reading it);
* per-node cost: a chain of 200 ImageInvert nodes against the 3-node image
  graph (medians of 5), divided by the 199 extra nodes;
* the server's own CPU time per prompt (all its threads, from /proc), which a
  busy machine disturbs much less than wall-clock rates.

Every server is started once (comfy-kernel's warm-up finished, a few prompts
run) and then the rounds go A, B, C, A, B, C ... with the order rotated, so a
burst of load from other processes hits every side alike. Printed: min and
median over the rounds, and the ratio of medians to ComfyUI's.

    python bench/prompts.py [--setups default,all] [--comfyui PATH] [--rounds 5] [--prompts 200]
    python bench/prompts.py --plugin-cost [--rounds 5]
    python bench/prompts.py --against ../older-checkout [--setups default]

``--against`` runs the same setups from another comfy-kernel checkout (an
older commit in a ``git worktree``) beside this one, to show what a change
did to these figures on the same machine in the same minutes.

``--plugin-cost`` compares kernel + core_nodes with kernel + core_nodes + each
installed plugin, the default install and all plugins: per-prompt server CPU
time and closed-loop latency, as a difference from kernel + core_nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

from common import (
    GRAPHS,
    Client,
    Server,
    chain,
    checkout_server,
    comfyui_server,
    floor_server,
    installed_plugins,
    kernel_server,
    load,
    ratio,
    stats,
)

FIGURES = [  # (key, label, unit, higher is better)
    ("primitive_closed", "trivial primitive, closed loop", "prompts/s", True),
    ("primitive_burst", "trivial primitive, open loop (burst)", "prompts/s", True),
    ("primitive_latency", "trivial primitive, closed-loop latency", "ms", False),
    ("primitive_cpu", "trivial primitive, server CPU per prompt", "ms", False),
    ("image_closed", "trivial image, closed loop", "prompts/s", True),
    ("image_burst", "trivial image, open loop (burst)", "prompts/s", True),
    ("image_latency", "trivial image, closed-loop latency", "ms", False),
    ("image_cpu", "trivial image, server CPU per prompt", "ms", False),
    ("object_info", "GET /object_info", "ms", False),
    ("object_info_cpu", "GET /object_info, server CPU per request", "ms", False),
    ("per_node", "per-node cost (chain of 200 ImageInvert)", "us", False),
]


CHAIN = 200


async def warm(server: Server) -> None:
    async with Client(server.url) as c:
        for make in GRAPHS.values():
            for i in range(5):
                await c.run(make(9000 + i))
        await c.get_ms("/object_info")


async def measure(server: Server, n: int, seed: int, full: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    async with Client(server.url) as c:
        if full and not server.name.startswith("floor"):  # the floor has no nodes
            await c.get_ms("/object_info")
            out["object_info"] = statistics.median([await c.get_ms("/object_info") for _ in range(20)])
            cpu = server.cpu_seconds()
            for _ in range(100):
                await c.get_ms("/object_info")
            out["object_info_cpu"] = (server.cpu_seconds() - cpu) / 100 * 1000
            chain_s = statistics.median([(await c.run(chain(CHAIN, seed + i)))[0] for i in range(5)])
            image_s = statistics.median([(await c.run(GRAPHS["image"](seed + 10 + i)))[0] for i in range(5)])
            out["per_node"] = (chain_s - image_s) / (CHAIN - 1) * 1e6
        for index, (graph, make) in enumerate(GRAPHS.items()):
            start = seed + index * 2 * n
            cpu = server.cpu_seconds()
            rate, lat = await c.closed_loop(make, start, n)
            out[f"{graph}_cpu"] = (server.cpu_seconds() - cpu) / n * 1000
            out[f"{graph}_closed"] = rate
            out[f"{graph}_latency"] = statistics.median(lat) * 1000
            if full:
                out[f"{graph}_burst"] = await c.burst(make, start + n, n)
    return out


def run_rounds(servers: list[Server], rounds: int, n: int, full: bool) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
    for r in range(rounds):
        order = servers[r % len(servers):] + servers[:r % len(servers)]
        for server in order:
            results[server.name].append(asyncio.run(measure(server, n, 100_000 + r * 20_000, full)))
        print(f"  round {r + 1}/{rounds} done; {load()}", flush=True)
    return results


def start_all(servers: list[Server]) -> None:
    for server in servers:
        server.start()
        server.wait_warm()
        asyncio.run(warm(server))
        print(f"  {server.name}: ready in {server.ready_s:.2f} s", flush=True)


def report(results: dict[str, list[dict[str, float]]], reference: str | None) -> None:
    print(f"\n{'figure':<44} {'server':<24} {'min':>9} {'median':>9}  unit       vs ComfyUI (median)")
    for key, label, unit, higher in FIGURES:
        theirs = None
        if reference is not None and results.get(reference) and key in results[reference][0]:
            theirs = statistics.median([r[key] for r in results[reference]])
        for name, rows in results.items():
            if not rows or key not in rows[0]:
                continue
            low, median = stats([r[key] for r in rows])
            shown = ""
            if theirs is not None and name != reference:
                x = ratio(median, theirs, higher)
                shown = f"{x:.2f}x " + ("better" if x >= 1 else "worse")
            print(f"{label:<44} {name:<24} {low:>9.2f} {median:>9.2f}  {unit:<10} {shown}")


def plugin_cost(results: dict[str, list[dict[str, float]]]) -> None:
    base = results["comfy-kernel core"]
    print(f"\n{'install':<34} {'CPU ms/prompt':>14} {'vs core':>9} {'latency ms':>11} {'vs core':>9}   "
          "(trivial primitive, medians of per-round values)")
    for name, rows in results.items():
        cpu = statistics.median([r["primitive_cpu"] for r in rows])
        lat = statistics.median([r["primitive_latency"] for r in rows])
        d_cpu = statistics.median([r["primitive_cpu"] / b["primitive_cpu"] - 1 for r, b in zip(rows, base, strict=True)])
        d_lat = statistics.median([r["primitive_latency"] / b["primitive_latency"] - 1 for r, b in zip(rows, base, strict=True)])
        print(f"{name:<34} {cpu:>14.3f} {d_cpu * 100:>+8.1f}% {lat:>11.2f} {d_lat * 100:>+8.1f}%")
    print("target: each installed plugin adds < 3 % per-prompt cost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default="default,all", help="comfy-kernel installs to measure (see common.py)")
    parser.add_argument("--comfyui", metavar="PATH", help="a ComfyUI checkout to measure alongside")
    parser.add_argument("--against", metavar="PATH", help="another comfy-kernel checkout to measure alongside")
    parser.add_argument("--floor", action="store_true",
                        help="also measure floor_server.py: the protocol and a durable queue, no executor")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=200, help="prompts per loop")
    parser.add_argument("--plugin-cost", action="store_true", help="per-plugin cost instead of the README figures")
    parser.add_argument("--json", help="write every round's raw figures here")
    args = parser.parse_args()

    if args.plugin_cost:
        others = [p for p in installed_plugins() if p != "core_nodes"]
        setups = ["core"] + [f"core+{p}" for p in others] + ["default", "all"]
    else:
        setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    servers = [kernel_server(s) for s in setups]
    if args.against and not args.plugin_cost:
        servers += [checkout_server(args.against, s) for s in setups]
    if args.floor and not args.plugin_cost:
        servers += [floor_server(), floor_server(inline=True)]
    if args.comfyui and not args.plugin_cost:
        servers.append(comfyui_server(args.comfyui))
    print(f"starting {len(servers)} servers; {load()}", flush=True)
    try:
        start_all(servers)
        results = run_rounds(servers, args.rounds, args.prompts, full=not args.plugin_cost)
    finally:
        for server in servers:
            server.cleanup()
    if args.plugin_cost:
        plugin_cost(results)
    else:
        report(results, "ComfyUI" if args.comfyui else None)
    print(f"\n{args.rounds} rounds of {args.prompts} prompts per loop; at the end: {load()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
