"""Executor benchmark, measured as ComfyUI's figures were (shared/reference/README.md §7).

Client: one WebSocket ``/ws?clientId=<id>`` open, prompts POSTed with that
client_id; completion = the ``execution_success`` message of the prompt;
client-side ``perf_counter``; medians. Graphs: trivial image (EmptyImage 8x8
→ ImageInvert → PreviewImage), trivial primitive (PrimitiveInt →
PreviewAny), chain EmptyImage → N × ImageInvert → PreviewImage. ``--setup``
picks the install (see common.py; default: ``default``, kernel + core_nodes +
userdata + compat); ``kernel`` runs ``bench/nodepack``'s versions of the five
nodes. ComfyUI's figures are the reference file's; ``bench/prompts.py``
measures the trivial prompts beside a running ComfyUI.

Usage: ``python bench/executor.py [--quick] [--setup default|core|kernel|all]``;
prints each figure beside ComfyUI's and the ratio (>1 means comfy-kernel is faster).
``--compare-billing`` instead measures what metering costs: the CPU time of
each of its pieces per prompt, then trivial prompts with and without the
billing plugin, interleaved (in one process, and on two servers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import aiohttp
import orjson
from websockets.asyncio.client import connect

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
REFERENCE = os.path.join(HERE, "..", "..", "shared", "reference", "comfyui_speed.json")

from common import chain, setup_flags  # noqa: E402

from comfy_kernel.testing import ServerProcess  # noqa: E402


def trivial_image(c: int) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": c}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def trivial_primitive(v: int) -> dict:
    return {"1": {"class_type": "PrimitiveInt", "inputs": {"value": v}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


class Bench:
    def __init__(self, url: str):
        self.url = url
        self.client_id = uuid.uuid4().hex
        self.done: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}

    async def __aenter__(self) -> Bench:
        # aiohttp, the client ComfyUI's reference figures were measured with.
        self.http = aiohttp.ClientSession(self.url, timeout=aiohttp.ClientTimeout(total=600))
        self.ws = await connect(self.url.replace("http", "ws") + f"/ws?clientId={self.client_id}", max_size=None)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.reader.cancel()
        await self.ws.close()
        await self.http.close()

    async def _read(self) -> None:
        async for raw in self.ws:
            if isinstance(raw, bytes):
                continue
            msg = orjson.loads(raw)
            t = time.perf_counter()
            kind, data = msg["type"], msg["data"]
            if kind == "execution_start":
                self.started[data["prompt_id"]] = t
            elif kind in ("execution_success", "execution_error"):
                pid = data["prompt_id"]
                self.done[pid] = t
                fut = self.waiters.get(pid)
                if fut is not None and not fut.done():
                    fut.set_result(kind)

    async def post(self, prompt: dict) -> str:
        pid = uuid.uuid4().hex
        self.waiters[pid] = asyncio.get_running_loop().create_future()
        body = orjson.dumps({"prompt": prompt, "client_id": self.client_id, "prompt_id": pid})
        async with self.http.post("/prompt", data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200, await r.text()
            await r.read()
        return pid

    async def run(self, prompt: dict) -> tuple[float, float]:
        t0 = time.perf_counter()
        pid = await self.post(prompt)
        t_post = time.perf_counter() - t0
        kind = await self.waiters[pid] if pid in self.waiters else "execution_success"
        assert kind == "execution_success", kind
        return self.done[pid] - t0, t_post

    async def closed_loop(self, make, start: int, n: int) -> tuple[float, list[float]]:
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            lat.append((await self.run(make(start + i)))[0])
        return n / (time.perf_counter() - t0), lat

    async def burst(self, make, start: int, n: int) -> float:
        t0 = time.perf_counter()
        pids = [await self.post(make(start + i)) for i in range(n)]
        futs = [self.waiters[p] for p in pids if p in self.waiters]
        await asyncio.gather(*futs)
        return n / (max(self.done[p] for p in pids) - t0)


def ratio(ours: float, theirs: float, higher_is_better: bool) -> str:
    r = ours / theirs if higher_is_better else theirs / ours
    return f"{r:.1f}x"


def line(label: str, ours: float, theirs: float | None, unit: str, higher_is_better: bool) -> None:
    if theirs is None:
        print(f"{label:<44} {ours:>10.2f} {unit:<10} (no ComfyUI figure)")
    else:
        print(f"{label:<44} {ours:>10.2f} {unit:<10} ComfyUI {theirs:>10.2f} {unit:<10} "
              f"-> {ratio(ours, theirs, higher_is_better)}")


def node_work_ms(n: int) -> float:
    """The chain's own node work measured in-process (calling the classes directly)."""
    sys.path.insert(0, os.path.join(HERE, "nodepack"))
    import bench_nodes as bn

    t = time.perf_counter()
    img = bn.EmptyImage().generate(8, 8, 1, 123)[0]
    inv = bn.ImageInvert()
    for _ in range(n):
        img = inv.invert(img)[0]
    with tempfile.TemporaryDirectory() as d:
        p = bn.PreviewImage()
        p.temp_dir = d
        p.save_images(img)
    return (time.perf_counter() - t) * 1000


def validation_scaling() -> dict[int, float]:
    from comfy_kernel.execution.validation import validate_prompt
    from comfy_kernel.nodes.registry import NodeRegistry

    sys.path.insert(0, os.path.join(HERE, "nodepack"))
    import bench_nodes as bn

    reg = NodeRegistry()
    for k, v in bn.NODE_CLASS_MAPPINGS.items():
        reg.register(k, v)
    out = {}
    for n in (200, 2000, 20000):
        times = []
        for _ in range(3):
            p = chain(n, 1)
            t = time.perf_counter()
            ok, *_ = asyncio.run(validate_prompt(p, reg))
            times.append(time.perf_counter() - t)
            assert ok
        out[n] = statistics.median(times) * 1000
    return out


async def measure(url: str, quick: bool) -> dict:
    res: dict = {}
    n_trivial = 50 if quick else 200
    async with Bench(url) as b:
        async with aiohttp.ClientSession(url) as h:
            async with h.get("/object_info") as r:
                await r.read()
            ts = []
            for _ in range(20):
                t = time.perf_counter()
                async with h.get("/object_info") as r:
                    await r.read()
                ts.append((time.perf_counter() - t) * 1000)
                assert r.status == 200
            res["object_info_ms"] = statistics.median(ts)
        await b.run(trivial_image(9999))
        res["image_closed"], lat = await b.closed_loop(trivial_image, 10000, n_trivial)
        res["image_latency_ms"] = statistics.median(lat) * 1000
        res["image_burst"] = await b.burst(trivial_image, 15000, n_trivial)
        await b.run(trivial_primitive(19999))
        res["prim_closed"], lat = await b.closed_loop(trivial_primitive, 20000, n_trivial)
        res["prim_latency_ms"] = statistics.median(lat) * 1000
        res["prim_burst"] = await b.burst(trivial_primitive, 25000, n_trivial)
        res["chain"] = {}
        run_no = 0
        for n in (10, 50, 100, 200, 500, 5000):
            times, posts = [], []
            for _ in range(1 if (quick and n == 5000) else 3):
                run_no += 1
                total, post = await b.run(chain(n, 100 + run_no))
                times.append(total * 1000)
                posts.append(post * 1000)
            res["chain"][n] = (statistics.median(times), statistics.median(posts))
        # fully cached re-run of the 500 chain
        p = chain(500, 4242)
        await b.run(p)
        cached = [(await b.run(p))[0] * 1000 for _ in range(3)]
        res["cached_500_ms"] = statistics.median(cached)
        # POST latency (validation + enqueue) of a 2000-node graph
        posts = []
        for i in range(3):
            t = time.perf_counter()
            pid = await b.post(chain(2000, 7000 + i))
            posts.append((time.perf_counter() - t) * 1000)
            await b.waiters[pid]
        res["post_2000_ms"] = statistics.median(posts)
    return res


BENCH_PLANS = """
currency = "usd"
default_plan = "bench"
[plans.bench]
monthly_credits = 1000000000.0
max_concurrent = 4
price_per_second = { cpu = 0.0001, cuda = 0.001, default = 0.001 }
"""


async def billing_round(url: str, make, start: int, n: int) -> tuple[float, float]:
    async with Bench(url) as b:
        await b.run(make(start - 1))
        closed, _lat = await b.closed_loop(make, start, n)
        burst = await b.burst(make, start + n, n)
    return closed, burst


def wait_warm(server: ServerProcess, timeout: float = 300.0) -> float:
    """Seconds until ``GET /api/health`` says the background warm-up is done."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if server.get("/api/health").json().get("warmup") in ("done", "off"):
            break
        time.sleep(0.05)
    return time.perf_counter() - started


def server_cpu(server: ServerProcess) -> float:
    """CPU seconds (user + system, every thread) the server process has used so far."""
    import psutil

    times = psutil.Process(server.proc.pid).cpu_times()
    return times.user + times.system


def compare_billing(args: argparse.Namespace) -> None:
    """Trivial-prompt throughput with and without metering, interleaved round by round.

    Two servers with the same setup (kernel + core_nodes): one with the billing
    plugin disabled, one with ``--billing`` (a plan that never runs out). Each
    round runs the same closed loop and burst on both, in alternating order, so
    that the machine's background load falls on both alike. Besides throughput
    it reports the server's own CPU time per prompt (every thread), which a busy
    machine disturbs far less than wall-clock rates.
    """
    others = "userdata,manager,assets,hub,multiuser,compat"
    rounds, n = (3, 100) if args.quick else (8, 200)
    servers = {}
    bases = []
    try:
        for name in ("without", "with"):
            base = tempfile.mkdtemp(prefix=f"ck-bench-billing-{name}-")
            bases.append(base)
            flags = ["--disable-plugins", others + (",billing" if name == "without" else "")]
            if name == "with":
                plans = os.path.join(base, "plans.toml")
                with open(plans, "w") as f:
                    f.write(BENCH_PLANS)
                flags += ["--billing", "--billing-config", plans]
            servers[name] = ServerProcess(base, *flags).start()
        figures: dict[str, dict[str, list[float]]] = {name: {"image": [], "image_burst": [], "prim": [],
                                                             "prim_burst": [], "image_cpu": [], "prim_cpu": []}
                                                      for name in servers}
        for r in range(rounds):
            order = ["without", "with"] if r % 2 == 0 else ["with", "without"]
            for name in order:
                url = servers[name].url
                cpu = server_cpu(servers[name])
                closed, burst = asyncio.run(billing_round(url, trivial_image, 100_000 * (r + 1), n))
                figures[name]["image_cpu"].append((server_cpu(servers[name]) - cpu) / (2 * n + 1) * 1e6)
                figures[name]["image"].append(closed)
                figures[name]["image_burst"].append(burst)
                cpu = server_cpu(servers[name])
                closed, burst = asyncio.run(billing_round(url, trivial_primitive, 100_000 * (r + 1) + 50_000, n))
                figures[name]["prim_cpu"].append((server_cpu(servers[name]) - cpu) / (2 * n + 1) * 1e6)
                figures[name]["prim"].append(closed)
                figures[name]["prim_burst"].append(burst)
        metered = servers["with"].get("/api/billing/usage", params={"bucket": "all", "group_by": "none"}).json()
        prompts = sum(row["prompts"] for row in metered["rows"])
    finally:
        for server in servers.values():
            server.stop()
            server.client.close()
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)
    print(f"billing overhead: {rounds} interleaved rounds of {n} prompts per figure; {prompts} prompts metered")
    print(f"{'figure (median of the rounds)':<44} {'without':>10} {'with':>10} {'change':>8}")
    result = {}
    for key, label in (("image", "trivial image, closed loop (prompts/s)"),
                       ("image_burst", "trivial image, burst (prompts/s)"),
                       ("prim", "trivial primitive, closed loop (prompts/s)"),
                       ("prim_burst", "trivial primitive, burst (prompts/s)"),
                       ("image_cpu", "trivial image, server CPU per prompt (us)"),
                       ("prim_cpu", "trivial primitive, server CPU per prompt (us)")):
        a, b = statistics.median(figures["without"][key]), statistics.median(figures["with"][key])
        result[key] = {"without": a, "with": b, "change_pct": (b - a) / a * 100,
                       "rounds": {"without": figures["without"][key], "with": figures["with"][key]}}
        print(f"{label:<44} {a:>10.1f} {b:>10.1f} {result[key]['change_pct']:>+7.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def billing_components() -> dict:
    """CPU time of each piece of metering per prompt, called directly (medians of 5 x 3,000 calls).

    The pieces on the server loop (admission, the concurrency check, charging
    a finished prompt) and on the billing thread (building and writing the
    usage records, a commit per 25 prompts), timed with the CPU clock of the
    calling thread, so a busy machine disturbs them far less than throughput.
    """
    import gc
    import tomllib
    import types

    from comfy_kernel.config import default_config
    from comfy_kernel.kernel import Kernel
    from comfy_kernel_billing.config import apply_plan_file
    from comfy_kernel_billing.service import Billing

    base = tempfile.mkdtemp(prefix="ck-bench-billing-parts-")
    kernel = Kernel(default_config(base_directory=base))
    kernel.prepare_directories()
    kernel.executor = types.SimpleNamespace(heap=[], running={}, starting={})
    prompt = trivial_primitive(1)
    nodes = {"1": {"class_type": "PrimitiveInt", "wall_s": 1e-5, "busy_s": 1e-5, "cached": False},
             "2": {"class_type": "PreviewAny", "wall_s": 1e-4, "busy_s": 1e-4, "cached": False}}

    def event(i: int) -> dict:
        now = time.time()
        return {"prompt_id": f"p{i}", "owner": "default", "status": {"status_str": "success", "messages": []},
                "outputs": {"2": {"text": ["1"]}}, "prompt": prompt, "nodes": nodes,
                "extra_data": {"billing": {"run": f"r{i}", "user": "default"}}, "created": now, "started": now,
                "ended": now, "worker": {"id": "worker-0", "type": "cpu", "name": "cpu"}}

    async def run() -> dict[str, list[float]]:
        from comfy_kernel.storage import upgrade

        kernel.host.discover()
        await kernel.database.open()
        await upgrade(kernel.database, kernel.migrations())
        billing = Billing(kernel)
        billing.settings.enabled = True
        apply_plan_file(billing.settings, tomllib.loads(BENCH_PLANS))
        await billing.start()
        request = types.SimpleNamespace(state=types.SimpleNamespace(identity=None))
        await billing.admit(request, prompt, {}, "default")
        gc.collect()
        times: dict[str, list[float]] = {}
        n = 3000
        for rep in range(5):
            t = time.thread_time()
            for _ in range(n):
                billing.admit(request, prompt, {}, "default")
            times.setdefault("admission at /prompt (loop)", []).append(time.thread_time() - t)
            start = {"prompt_id": "p", "owner": "default", "extra_data": {}}
            t = time.thread_time()
            for _ in range(n):
                billing.may_start(start)
            times.setdefault("max_concurrent check (loop)", []).append(time.thread_time() - t)
            events = [event(rep * n + i) for i in range(n)]
            t = time.thread_time()
            for e in events:
                billing.finished(e)
            times.setdefault("charging a finished prompt (loop)", []).append(time.thread_time() - t)
            queued, billing._unwritten = billing._unwritten, []
            t = time.process_time()  # every thread: records are built on one, written on the loop
            for j in range(0, n, 25):
                billing._unwritten = queued[j:j + 25]
                await billing.flush()
            times.setdefault("writing the usage record (batches of 25)", []).append(time.process_time() - t)
        await billing.stop()
        await kernel.database.close()
        return {k: [v / n * 1e6 for v in vs] for k, vs in times.items()}

    try:
        parts = asyncio.run(run())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("metering, CPU per prompt of each piece (median of 5 x 3000 calls):")
    out = {}
    for label, values in parts.items():
        out[label] = statistics.median(values)
        print(f"  {label:<40} {out[label]:>6.1f} us")
    return out


def billing_in_process(args: argparse.Namespace) -> dict:
    """Metering's own cost, measured in one server process with the billing hooks on and off.

    Two servers on one busy machine differ by several percent even when they
    are identical, which hides a 1 % effect. Here one kernel (core_nodes,
    ``--billing``) runs in this process, requests go through the ASGI app
    without sockets, and the billing plugin's execution hooks are
    unregistered and registered again between rounds (its database thread
    stays up), so both sides share the process, its memory and the machine's
    load of the moment. Figures: prompts per second and process CPU time per
    prompt, closed loop, medians of the rounds.
    """
    import gc

    import httpx

    from comfy_kernel import hookimpl
    from comfy_kernel.app import build_app
    from comfy_kernel.cli import build_parser
    from comfy_kernel.plugins import PluginHost
    from comfy_kernel.server import create_kernel

    rounds, n = (10, 50) if args.quick else (40, 100)
    base = tempfile.mkdtemp(prefix="ck-bench-billing-")
    plans = os.path.join(base, "plans.toml")
    with open(plans, "w") as f:
        f.write(BENCH_PLANS)
    host = PluginHost(disabled=["userdata", "manager", "assets", "hub", "multiuser", "compat"])
    host.discover()
    config = build_parser(host).parse_args(["serve", "--base-directory", base, "--billing", "--billing-config",
                                            plans, "--disable-plugins", ",".join(sorted(host.disabled))])

    done: dict[str, asyncio.Future] = {}

    class Watcher:
        @hookimpl
        def ck_prompt_finished(self, event: dict) -> None:
            fut = done.pop(event["prompt_id"], None)
            if fut is not None and not fut.done():
                fut.set_result(event["status"]["status_str"])

    async def run() -> dict:
        kernel = create_kernel(config, host)
        app = build_app(kernel)
        await kernel.startup()
        host.pm.register(Watcher(), name="bench-watcher")
        hooks = {name: host.pm.get_plugin(name) for name in ("billing-execution", "billing-concurrency")}
        assert hooks["billing-execution"] is not None and kernel.state["billing"].started, "billing did not start"
        hooks = {name: obj for name, obj in hooks.items() if obj is not None}

        def switch(on: bool) -> None:
            for name, obj in hooks.items():
                if on and not host.pm.is_registered(obj):
                    host.pm.register(obj, name=name)
                elif not on and host.pm.is_registered(obj):
                    host.pm.unregister(obj)

        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
        loop = asyncio.get_running_loop()

        async def one(value: int) -> None:
            pid = uuid.uuid4().hex
            done[pid] = fut = loop.create_future()
            r = await client.post("/prompt", json={"prompt": trivial_primitive(value), "prompt_id": pid})
            assert r.status_code == 200, r.text
            assert await fut == "success"

        for i in range(20):  # warm up: workers, caches
            await one(-1 - i)
        gc.collect()
        figures: dict[str, dict[str, list[float]]] = {k: {"rate": [], "cpu_us": []} for k in ("off", "on")}
        value = 0
        for r in range(rounds):
            for state in (("on", "off") if r % 2 else ("off", "on")):
                switch(state == "on")
                cpu, t = time.process_time(), time.perf_counter()
                for _ in range(n):
                    value += 1
                    await one(value)
                wall = time.perf_counter() - t
                figures[state]["rate"].append(n / wall)
                figures[state]["cpu_us"].append((time.process_time() - cpu) / n * 1e6)
        switch(True)
        await client.aclose()
        await kernel.shutdown()
        return figures

    try:
        figures = asyncio.run(run())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = {}
    print(f"in one process, billing hooks off/on in alternate rounds ({rounds} rounds of {n} trivial primitive "
          "prompts, no sockets):")
    for key, label in (("rate", "prompts/s"), ("cpu_us", "process CPU per prompt (us)")):
        a, b = statistics.median(figures["off"][key]), statistics.median(figures["on"][key])
        out[key] = {"off": a, "on": b, "change_pct": (b - a) / a * 100, "rounds": figures}
        print(f"  {label:<32} off {a:>9.1f}   on {b:>9.1f}   change {(b - a) / a * 100:>+6.2f}%")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer prompts (for CI)")
    parser.add_argument("--compare-billing", action="store_true",
                        help="only compare trivial-prompt throughput with and without the billing plugin's "
                             "metering (interleaved rounds; needs comfy-kernel-billing installed)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--setup", default="default", help="the install (see common.py): default, core, "
                        "kernel (bench/nodepack's five nodes), all")
    args = parser.parse_args()
    if args.compare_billing:
        parts = billing_components()
        precise = billing_in_process(args)
        compare_billing(args)
        if args.json:
            with open(args.json) as f:
                both = json.load(f)
            with open(args.json, "w") as f:
                json.dump({"components_us": parts, "in_process": precise, "two_servers": both}, f, indent=1)
        return
    with open(REFERENCE) as f:
        ref = json.load(f)
    base = tempfile.mkdtemp(prefix="ck-bench-")
    flags = setup_flags(args.setup)
    if args.setup == "kernel":
        shutil.copytree(os.path.join(HERE, "nodepack", "bench_nodes"),
                        os.path.join(base, "custom_nodes", "bench_nodes"))
    print(f"setup: {args.setup}")
    server = ServerProcess(base, *flags, warmup=True)
    server.start()
    # Steady-state figures: the background warm-up (importing the model code) would share the CPU
    # and the GIL with the first prompts; bench/startup.py measures the first prompts after ready on their own.
    print(f"warm-up finished {wait_warm(server):.1f} s after ready")
    try:
        res = asyncio.run(measure(server.url, args.quick))
    finally:
        server.stop()
        server.client.close()
        shutil.rmtree(base, ignore_errors=True)

    ti, tp = ref["trivial_image"], ref["trivial_primitive"]
    print("figure                                       comfy-kernel          ComfyUI (2 vCPU reference)")
    line("GET /object_info (ms, median of 20)", res["object_info_ms"], ref["object_info_ms"]["median"], "ms", False)
    line("trivial image, closed loop (prompts/s)", res["image_closed"], ti["closed_loop_prompts_per_s"], "/s", True)
    line("trivial image, latency median (ms)", res["image_latency_ms"], ti["closed_loop_latency_ms"]["median"],
         "ms", False)
    line("trivial image, burst (prompts/s)", res["image_burst"], ti["burst_prompts_per_s"], "/s", True)
    line("trivial primitive, closed loop (prompts/s)", res["prim_closed"], tp["closed_loop_prompts_per_s"], "/s", True)
    line("trivial primitive, latency median (ms)", res["prim_latency_ms"], tp["closed_loop_latency_ms"]["median"],
         "ms", False)
    line("trivial primitive, burst (prompts/s)", res["prim_burst"], tp["burst_prompts_per_s"], "/s", True)
    for n, (total, _post) in res["chain"].items():
        theirs = ref["chain"].get(str(n), {}).get("post_to_success_ms_median")
        line(f"chain N={n}, POST->success (ms)", total, theirs, "ms", False)
    per_node = {}
    for n in (500, 5000):
        work = node_work_ms(n)
        per_node[n] = (res["chain"][n][0] - work) / n * 1000
        print(f"chain N={n}: node work {work:.1f} ms in-process; executor overhead {per_node[n]:.1f} us/node"
              + (" (ComfyUI: 25700 us/node)" if n == 500 else ""))
    print(f"chain N=5000 / N=500 time ratio: {res['chain'][5000][0] / res['chain'][500][0]:.1f} (target <= 12)")
    line("fully cached re-run, N=500 chain (ms)", res["cached_500_ms"], None, "ms", False)
    line("POST /prompt of a 2000-node graph (ms)", res["post_2000_ms"], None, "ms", False)
    scaling = validation_scaling()
    print("validation in-process: " + ", ".join(f"N={n}: {t:.1f} ms" for n, t in scaling.items())
          + f"  (20000/2000 = {scaling[20000] / scaling[2000]:.1f}, linear = 10)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**res, "per_node_us": per_node, "validation_ms": scaling}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
