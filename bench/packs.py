"""Start-up cost of ComfyUI node packs: 100 small generated packs versus none.

Each generated pack is written the way pack authors write them: it imports
``folder_paths``, ``nodes``, ``server``, ``comfy.utils`` and
``comfy.model_management`` through the compat plugin, adds a model folder,
registers an HTTP route on ``PromptServer.instance`` and maps two classic
nodes; every fifth pack is a V3 pack with a ``comfy_entrypoint``, and every
tenth has a web directory. Start-up is measured as ``bench/startup.py`` does
(spawn to the first 200 on ``GET /system_stats``), alternating starts with
and without the packs (A, B, A, B ...), with the same install both times
(``--setup``, see common.py; it needs the compat plugin), so the difference
is the packs' cost. Target: under 1 s added.

    python bench/packs.py [--packs 100] [--runs 5] [--setup default|all]

With ``--custom-nodes DIR`` it measures real packs instead: the folders of DIR
(for example the popular packs with their requirements installed) are copied
into a fresh base directory and comfy-kernel starts with its default plugins.
``--comfyui CHECKOUT`` starts ComfyUI (``main.py`` with the checkout's
``.venv``) on a copy of the same folders, and the ratio is checked against the
1.5x target.

    python bench/packs.py --custom-nodes DIR [--comfyui CHECKOUT] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

from common import load, setup_flags

from comfy_kernel.testing import free_port

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "comfyui_speed.json")
COMFYUI_STARTUP_FALLBACK_S = 9.5

CLASSIC = '''
import os

import comfy.model_management
import comfy.utils
import folder_paths
import nodes
from aiohttp import web
from server import PromptServer

folder_paths.add_model_folder_path("bench_{i}", os.path.join(os.path.dirname(__file__), "models"))
{web}

@PromptServer.instance.routes.get("/bench_{i}/ping")
async def ping(request):
    return web.json_response({{"pack": {i}}})


class Bench{i}Add:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"a": ("INT", {{"default": 1, "max": nodes.MAX_RESOLUTION}}),
                             "model": (folder_paths.get_filename_list("bench_{i}"),)}}}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "bench"

    def run(self, a, model):
        comfy.model_management.throw_exception_if_processing_interrupted()
        return (a + 1,)


class Bench{i}Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"value": ("INT", {{"forceInput": True}})}}}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "bench"

    def show(self, value):
        comfy.utils.ProgressBar(1).update(1)
        return {{"ui": {{"value": [value]}}}}


NODE_CLASS_MAPPINGS = {{"Bench{i}Add": Bench{i}Add, "Bench{i}Show": Bench{i}Show}}
NODE_DISPLAY_NAME_MAPPINGS = {{"Bench{i}Add": "Bench {i} Add"}}
'''

V3 = '''
from comfy_api.latest import ComfyExtension, io


class Bench{i}V3(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Bench{i}V3", category="bench",
                         inputs=[io.Int.Input("a", default=1)], outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, a):
        return io.NodeOutput(a * 2)


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [Bench{i}V3]


async def comfy_entrypoint():
    return Extension()
'''


def make_packs(custom_nodes: str, count: int) -> None:
    for i in range(count):
        pack = os.path.join(custom_nodes, f"bench_pack_{i:03d}")
        os.makedirs(os.path.join(pack, "models"), exist_ok=True)
        with open(os.path.join(pack, "models", "m.safetensors"), "wb") as f:
            f.write(b"\0")
        web = ""
        if i % 10 == 0:
            os.makedirs(os.path.join(pack, "web"), exist_ok=True)
            with open(os.path.join(pack, "web", "ext.js"), "w") as f:
                f.write("export {};\n")
            web = 'WEB_DIRECTORY = "./web"\n'
        source = V3.format(i=i) if i % 5 == 4 else CLASSIC.format(i=i, web=web)
        with open(os.path.join(pack, "__init__.py"), "w") as f:
            f.write(textwrap.dedent(source))


def one_start(base: str, extra: list[str], comfyui: str | None = None) -> tuple[float, int, float]:
    """Seconds from spawn to the first 200 on /system_stats, node types loaded, and the
    packs' own import time as the server recorded it (less sensitive to a busy machine)."""
    port = free_port()
    # No background warm-up: it starts after the first answer, and stopping would wait for it.
    cmd = [sys.executable, "-m", "comfy_kernel.cli", "serve", "--port", str(port), "--base-directory", base,
           "--no-warmup", *extra]
    if comfyui is not None:
        cmd = [os.path.join(comfyui, ".venv", "bin", "python"), os.path.join(comfyui, "main.py"), "--cpu",
               "--listen", "127.0.0.1", "--port", str(port), "--base-directory", base]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=base)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=1) as r:
                    if r.status == 200:
                        elapsed = time.perf_counter() - start
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("server exited during start-up")
            if time.perf_counter() - start > 300:
                raise TimeoutError("no answer in 300 s")
            time.sleep(0.01)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=30) as r:
            nodes = len(json.load(r))
        if comfyui is not None:
            return elapsed, nodes, 0.0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/plugins", timeout=30) as r:
            imports = sum(p["import_time"] for p in json.load(r) if p["kind"] == "node_pack")
        return elapsed, nodes, imports
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def clear_bytecode(base: str) -> None:
    """The first start after installing packs is what users see: later ones must not look cheaper."""
    for root, dirs, _files in os.walk(os.path.join(base, "custom_nodes")):
        for d in [d for d in dirs if d == "__pycache__"]:
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)


def measure(packs: int, runs: int, extra: list[str]) -> dict[int, tuple[list[float], int, list[float]]]:
    """Start-up times with no packs and with ``packs`` packs, alternating."""
    bases = {count: tempfile.mkdtemp(prefix="ck-bench-packs-") for count in (0, packs)}
    out: dict[int, tuple[list[float], int, list[float]]] = {count: ([], 0, []) for count in bases}
    try:
        for count, base in bases.items():
            make_packs(os.path.join(base, "custom_nodes"), count)
        for _ in range(runs):
            for count, base in bases.items():
                clear_bytecode(base)
                elapsed, nodes, imported = one_start(base, extra)
                times, _, imports = out[count]
                times.append(elapsed)
                imports.append(imported)
                out[count] = (times, nodes, imports)
        return out
    finally:
        for base in bases.values():
            shutil.rmtree(base, ignore_errors=True)


def measure_real(custom_nodes: str, runs: int, comfyui: str | None) -> tuple[float, list[float], int]:
    """Median start-up with copies of the pack folders of ``custom_nodes`` installed."""
    base = tempfile.mkdtemp(prefix="ck-bench-real-")
    try:
        shutil.copytree(custom_nodes, os.path.join(base, "custom_nodes"), symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", ".git"))
        os.makedirs(os.path.join(base, "user"), exist_ok=True)
        times, nodes = [], 0
        for _ in range(runs):
            elapsed, nodes, _imports = one_start(base, [], comfyui)
            times.append(elapsed)
        return statistics.median(times), times, nodes
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main_real(custom_nodes: str, runs: int, comfyui: str | None) -> None:
    count = len([n for n in os.listdir(custom_nodes) if not n.startswith((".", "__"))])
    ours, ours_times, ours_nodes = measure_real(custom_nodes, runs, None)
    print(f"{'configuration':<34} {'median s':>9} {'min':>7} {'max':>7} {'node types':>11}")
    print(f"{f'comfy-kernel, {count} packs':<34} {ours:>9.3f} {min(ours_times):>7.3f} {max(ours_times):>7.3f} "
          f"{ours_nodes:>11}")
    if comfyui is None:
        return
    theirs, theirs_times, theirs_nodes = measure_real(custom_nodes, runs, comfyui)
    print(f"{f'ComfyUI, {count} packs':<34} {theirs:>9.3f} {min(theirs_times):>7.3f} {max(theirs_times):>7.3f} "
          f"{theirs_nodes:>11}")
    ratio = ours / theirs
    print(f"comfy-kernel / ComfyUI: {ratio:.2f}x; target at most 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--setup", default="default", help="install to start (see common.py); needs compat")
    parser.add_argument("--custom-nodes", metavar="DIR", help="measure the pack folders of DIR instead")
    parser.add_argument("--comfyui", metavar="CHECKOUT", help="also start ComfyUI from CHECKOUT with them")
    args = parser.parse_args()
    if args.custom_nodes:
        main_real(args.custom_nodes, args.runs, args.comfyui)
        return
    print(f"setup: {args.setup}; {load()}", flush=True)
    res = measure(args.packs, args.runs, setup_flags(args.setup))
    none_times, none_nodes, _ = res[0]
    packs_times, packs_nodes, packs_imports = res[args.packs]
    try:
        with open(REFERENCE) as f:
            comfyui = float(json.load(f)["startup_median_s"])
        source = "reference figure, shared/reference"
    except (OSError, KeyError, ValueError):
        comfyui, source = COMFYUI_STARTUP_FALLBACK_S, "reference figure"
    added = statistics.median(packs_times) - statistics.median(none_times)
    print(f"{'configuration':<34} {'median s':>9} {'min':>7} {'max':>7} {'node types':>11}")
    for label, times, nodes in ((f"comfy-kernel {args.setup}, no packs", none_times, none_nodes),
                                (f"comfy-kernel {args.setup}, {args.packs} packs", packs_times, packs_nodes)):
        print(f"{label:<34} {statistics.median(times):>9.3f} {min(times):>7.3f} {max(times):>7.3f} {nodes:>11}")
    print(f"{'ComfyUI, no custom packs':<34} {comfyui:>9.3f}   ({source}; bench/startup.py measures it now)")
    print(f"added by {args.packs} packs: {added:.3f} s ({added / max(args.packs, 1) * 1000:.1f} ms a pack); "
          f"target under 1 s: {'met' if added < 1.0 else 'NOT met'}")
    print(f"the packs' import time recorded by the server (median sum): {statistics.median(packs_imports):.3f} s")
    print(f"{args.runs} alternating starts each; at the end: {load()}")


if __name__ == "__main__":
    main()
