"""Start-up cost of ComfyUI node packs: 100 small generated packs versus none.

Each generated pack is written the way pack authors write them: it imports
``folder_paths``, ``nodes``, ``server``, ``comfy.utils`` and
``comfy.model_management`` through the compat plugin, adds a model folder,
registers an HTTP route on ``PromptServer.instance`` and maps two classic
nodes; every fifth pack is a V3 pack with a ``comfy_entrypoint``, and every
tenth has a web directory. Start-up is measured as ``bench/startup.py`` does
(spawn to the first 200 on ``GET /system_stats``, median of several starts),
with only the compat plugin enabled in both runs so the difference is the
packs' cost. Target: under 1 s added.

    python bench/packs.py [--packs 100] [--runs 5]
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
from importlib.metadata import entry_points

from comfy_kernel.plugins import ENTRY_POINT_GROUPS
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


def only_compat() -> list[str]:
    names = sorted({ep.name for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)} - {"compat"})
    return ["--disable-plugins", ",".join(names)] if names else []


def one_start(base: str, extra: list[str]) -> tuple[float, int, float]:
    """Seconds from spawn to the first 200 on /system_stats, node types loaded, and the
    packs' own import time as the server recorded it (less sensitive to a busy machine)."""
    port = free_port()
    cmd = [sys.executable, "-m", "comfy_kernel.cli", "serve", "--port", str(port), "--base-directory", base, *extra]
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
            if time.perf_counter() - start > 120:
                raise TimeoutError("no answer in 120 s")
            time.sleep(0.01)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=30) as r:
            nodes = len(json.load(r))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/plugins", timeout=30) as r:
            imports = sum(p["import_time"] for p in json.load(r) if p["kind"] == "node_pack")
        return elapsed, nodes, imports
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(count: int, runs: int, extra: list[str]) -> tuple[float, list[float], int, float]:
    base = tempfile.mkdtemp(prefix="ck-bench-packs-")
    try:
        make_packs(os.path.join(base, "custom_nodes"), count)
        times, imports, nodes = [], [], 0
        for _ in range(runs):
            # Every start of one configuration wipes the bytecode cache: the first start after
            # installing packs is what users see, and later ones must not look cheaper for it.
            for root, dirs, _files in os.walk(os.path.join(base, "custom_nodes")):
                for d in [d for d in dirs if d == "__pycache__"]:
                    shutil.rmtree(os.path.join(root, d), ignore_errors=True)
            elapsed, nodes, imported = one_start(base, extra)
            times.append(elapsed)
            imports.append(imported)
        return statistics.median(times), times, nodes, statistics.median(imports)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    extra = only_compat()
    none_median, none_times, none_nodes, _ = measure(0, args.runs, extra)
    packs_median, packs_times, packs_nodes, packs_imports = measure(args.packs, args.runs, extra)
    try:
        with open(REFERENCE) as f:
            comfyui = float(json.load(f)["startup_median_s"])
        source = "measured on this machine"
    except (OSError, KeyError, ValueError):
        comfyui, source = COMFYUI_STARTUP_FALLBACK_S, "reference figure"
    added = packs_median - none_median
    print(f"{'configuration':<34} {'median s':>9} {'min':>7} {'max':>7} {'node types':>11}")
    print(f"{'comfy-kernel, no packs':<34} {none_median:>9.3f} {min(none_times):>7.3f} {max(none_times):>7.3f} "
          f"{none_nodes:>11}")
    print(f"{f'comfy-kernel, {args.packs} packs':<34} {packs_median:>9.3f} {min(packs_times):>7.3f} "
          f"{max(packs_times):>7.3f} {packs_nodes:>11}")
    print(f"{'ComfyUI, no custom packs':<34} {comfyui:>9.3f}   ({source})")
    print(f"added by {args.packs} packs: {added:.3f} s ({added / max(args.packs, 1) * 1000:.1f} ms a pack); "
          f"target under 1 s: {'met' if added < 1.0 else 'NOT met'}")
    print(f"the packs' import time recorded by the server (median sum): {packs_imports:.3f} s")


if __name__ == "__main__":
    main()
