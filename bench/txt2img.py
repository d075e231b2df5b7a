"""txt2img speed through the real server, measured as ComfyUI's was (shared/reference/README.md §7).

The reference txt2img workflow (tiny SD1.5 checkpoint, 64x64, 4 euler steps)
runs on a server on 127.0.0.1 driven by one WebSocket client; completion is
the ``execution_success`` message. Cold: POST /free (unload models + free
memory), wait 1 s, run; measured twice, with the reference prompts (whose
encodings the plugin keeps across /free) and with prompts it has not seen
(the text encoder is then loaded and run, as in ComfyUI's cold runs). Warm: models loaded, the seed changed each run so the
KSampler and everything after it re-run. KSampler, VAE decode and save times
come from the ``executing`` message timestamps, the per-step time from the
``progress`` messages. Medians of 5. Each figure is printed beside ComfyUI's
(shared/reference/comfyui_speed.json) with the ratio ours / ComfyUI's.

Usage: ``python bench/txt2img.py [--runs 5] [--threads N] [--checkpoint PATH] [-- extra serve flags]``.
With ``--preset sd15 --size 512`` it reports sampler iterations per second on
the full-size SD1.5 layout instead.

With ``--comfyui CHECKOUT`` ComfyUI runs beside the server on the same
checkpoint and workflow (``--cpu``, stock nodes, a temporary base directory,
its checkout's ``.venv``): after one warm-up prompt each, warm runs alternate
(ours, ComfyUI's, ours ...) so that other load on the machine hits both
alike, and the per-step time (from each server's ``progress`` messages) and
the KSampler time are printed as min / median with the ratio ours / ComfyUI's.
``--preset sd15 --size 512 --latent-out`` measures the real SD1.5 shapes at
512x512; ``--latent-out`` ends the graph with SaveLatent instead of VAE
decode + SaveImage, which keeps a CPU run short without changing the steps.
``--family NAME`` runs that model family's workflow shape on its random-weight
files instead (bench/families/<module>.py: ``prepare(base)``, ``prompt(size, steps)``)
and also reports the server's peak resident memory.
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
import time
import uuid
from pathlib import Path
from typing import Any

from comfy_kernel.testing import ServerProcess

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent.parent / "shared" / "reference"
GENERATOR = HERE.parent / "plugins" / "core_nodes" / "tests" / "data" / "make_checkpoint.py"
CACHE = HERE.parent / ".cache" / "checkpoints"
A100_DIFFUSERS_SDPA_ITS = 31.0
A100_DIFFUSERS_COMPILE_ITS = 37.0
#: --family choices -> their module in bench/families/
FAMILIES = {"flux": "flux", "flux2": "flux2", "qwen_image": "qwen_image", "z_image": "z_image", "sd3": "sd3",
            "wan22": "wan22", "hidream": "hidream", "hunyuan_video15": "hunyuan_video15"}


def checkpoint_path(preset: str, explicit: str | None) -> Path:
    """The cached checkpoint of ``preset`` (seed 0), generated with the shared script when missing."""
    if explicit:
        return Path(explicit)
    target = CACHE / f"sd15-{preset}-seed0.safetensors"
    if not target.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        subprocess.run([sys.executable, str(GENERATOR), "--preset", preset, "--seed", "0",
                        "--out", str(partial)], check=True)
        os.replace(partial, target)
    return target


def prepare_base(base: Path, checkpoint: Path) -> None:
    """Put the checkpoint into <base>/models/checkpoints under the name the workflow loads."""
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.link(checkpoint, folder / "sd15-tiny-seed0.safetensors")
    except OSError:
        shutil.copy(checkpoint, folder / "sd15-tiny-seed0.safetensors")


class UrlServer:
    """A running server known by its port (ComfyUI's), with ServerProcess's post and ws."""

    def __init__(self, port: int) -> None:
        import httpx

        self.port = port
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, **kw)

    ws = ServerProcess.ws


class Client:
    def __init__(self, server: ServerProcess | UrlServer) -> None:
        self.server = server
        self.client_id = uuid.uuid4().hex
        self._ctx = server.ws(self.client_id, ping_interval=None)  # a busy CPU server answers pings late
        self.ws = self._ctx.__enter__()

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)

    def run(self, prompt: dict[str, Any]) -> tuple[float, list[tuple[float, str, Any]]]:
        """POST the prompt; returns seconds until its execution_success and the timed messages."""
        start = time.perf_counter()
        r = self.server.post("/prompt", json={"prompt": prompt, "client_id": self.client_id})
        r.raise_for_status()
        prompt_id = r.json()["prompt_id"]
        messages: list[tuple[float, str, Any]] = []
        while True:
            raw = self.ws.recv(timeout=600)
            now = time.perf_counter()
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            data = msg.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            messages.append((now, msg["type"], data))
            if msg["type"] == "execution_success":
                return now - start, messages
            if msg["type"] in ("execution_error", "execution_interrupted"):
                raise RuntimeError(json.dumps(data)[:2000])


def node_times(messages: list[tuple[float, str, Any]]) -> dict[str, float]:
    """Seconds from each node's ``executing`` message to the next one (or to success)."""
    starts = [(t, d.get("node")) for t, kind, d in messages if kind == "executing"]
    end = next(t for t, kind, _ in messages if kind == "execution_success")
    out = {}
    for (t, node), (t_next, _) in zip(starts, starts[1:] + [(end, None)], strict=True):
        if node is not None:
            out[node] = t_next - t
    return out


def step_times(messages: list[tuple[float, str, Any]], node: str) -> list[float]:
    """Intervals between the sampler's progress messages: one per step after the first."""
    ticks = [t for t, kind, d in messages if kind == "progress" and d.get("node") == node]
    return [b - a for a, b in zip(ticks, ticks[1:], strict=False)]


def peak_rss(pid: int) -> int | None:
    """The process's peak resident set (Linux ``VmHWM``), in bytes."""
    try:
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) * 1024
    except OSError:
        return None
    return None


def line(label: str, ours: float, theirs: float | None, unit: str = "s") -> str:
    if theirs:
        return f"{label:<34} {ours:8.3f} {unit}   ComfyUI {theirs:8.3f} {unit}   ratio {ours / theirs:5.2f}x"
    return f"{label:<34} {ours:8.3f} {unit}"


def warm_figures(client: Client, prompt: dict[str, Any], steps: int, seed: int) -> tuple[float, float, list[float]]:
    """One warm run with a new seed: (KSampler seconds, KSampler / steps, intervals between progress messages)."""
    prompt["5"]["inputs"]["seed"] = seed
    _, messages = client.run(prompt)
    ksampler = node_times(messages).get("5", 0.0)
    return ksampler, ksampler / steps, step_times(messages, "5")


def compare_with_comfyui(args: argparse.Namespace, prompt: dict[str, Any], checkpoint: Path) -> None:
    """Warm runs on both servers, interleaved; prints min / median of each figure and the ratio."""
    sys.path.insert(0, str(HERE))
    import common

    label = f"preset {args.preset}, {args.size}x{args.size}, {args.steps} steps"
    ours_steps: list[float] = []
    theirs_steps: list[float] = []
    ours_run: list[float] = []
    theirs_run: list[float] = []
    ours_k: list[float] = []
    theirs_k: list[float] = []
    comfy = common.comfyui_server(args.comfyui)
    prepare_base(Path(comfy.base), checkpoint)
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    if args.threads:
        comfy.env["OMP_NUM_THREADS"] = str(args.threads)
    loads = [common.load()]
    with tempfile.TemporaryDirectory() as tmp:
        prepare_base(Path(tmp), checkpoint)
        with ServerProcess(tmp, *args.extra, env=env, startup_timeout=120) as server:
            comfy.start()
            ours, theirs = Client(server), Client(UrlServer(comfy.port))
            try:
                ours.run(prompt)
                theirs.run(prompt)
                for i in range(args.runs):
                    for client, steps, runs, ks in ((ours, ours_steps, ours_run, ours_k),
                                                   (theirs, theirs_steps, theirs_run, theirs_k)):
                        k, per, steady = warm_figures(client, prompt, args.steps, 1000 + i)
                        steps.extend(steady)
                        runs.append(per)
                        ks.append(k)
                    loads.append(common.load())
                    print(f"round {i + 1}: ours {ours_run[-1]:.4f} s/step, ComfyUI {theirs_run[-1]:.4f} s/step",
                          flush=True)
            finally:
                ours.close()
                theirs.close()
                comfy.cleanup()

    def row(name: str, a: list[float], b: list[float]) -> str:
        (amin, amed), (bmin, bmed) = common.stats(a), common.stats(b)
        return (f"{name:<30} ours {amin:7.4f} / {amed:7.4f} s   ComfyUI {bmin:7.4f} / {bmed:7.4f} s   "
                f"ratio {amin / bmin:4.2f}x / {amed / bmed:4.2f}x")

    print(f"txt2img warm, {label}, {args.runs} interleaved rounds (min / median; ratio = ours / ComfyUI's)")
    print(row("steady step (progress)", ours_steps, theirs_steps))
    print(row("KSampler / steps", ours_run, theirs_run))
    print(row("KSampler", ours_k, theirs_k))
    print("load:", loads[0], "->", loads[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--checkpoint", help="checkpoint file (default: the cached tiny preset)")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "min", "sd15"])
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the server (default: torch's choice)")
    parser.add_argument("--family", choices=sorted(FAMILIES), help="a model family's workflow instead of SD1.5")
    parser.add_argument("--comfyui", metavar="CHECKOUT", help="also run ComfyUI from this checkout, interleaved")
    parser.add_argument("--latent-out", action="store_true",
                        help="end the graph with SaveLatent (no VAE decode): sampler figures only")
    parser.add_argument("extra", nargs="*", help="extra flags for comfy-kernel serve")
    args = parser.parse_args()

    family = None
    if args.family:
        import importlib

        sys.path.insert(0, str(HERE))
        family = importlib.import_module(f"families.{FAMILIES[args.family]}")
        prompt, reference, comparable = family.prompt(args.size, args.steps), {}, False
    else:
        prompt = json.loads((REFERENCE / "workflows" / "txt2img.json").read_text())
        prompt["4"]["inputs"].update(width=args.size, height=args.size)
        prompt["5"]["inputs"]["steps"] = args.steps
        reference = json.loads((REFERENCE / "comfyui_speed.json").read_text())["txt2img"]
        comparable = args.preset == "tiny" and args.size == 64 and args.steps == 4 and not args.latent_out
        if not comparable:
            reference = {}
        if args.latent_out:
            del prompt["6"]
            prompt["7"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "bench"}}
        if args.comfyui:
            compare_with_comfyui(args, prompt, checkpoint_path(args.preset, args.checkpoint))
            return

    peak = None
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if family is not None:
            family.prepare(base)
        else:
            prepare_base(base, checkpoint_path(args.preset, args.checkpoint))
        env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
        with ServerProcess(base, *args.extra, env=env, startup_timeout=120) as server:
            client = Client(server)
            try:
                client.run(prompt)  # warm-up: imports, first load
                cold, cold_encode = [], []
                for i in range(args.runs):
                    server.post("/free", json={"unload_models": True, "free_memory": True}).raise_for_status()
                    time.sleep(1.0)
                    cold.append(client.run(prompt)[0])
                    # Same run with the prompts' text made new by trailing spaces (the tokenizer drops
                    # them, so the work is identical): misses the plugin's text-encoding cache, so the
                    # text encoder is loaded and both prompts are encoded, as ComfyUI's cold runs did.
                    fresh = json.loads(json.dumps(prompt))
                    for node in ("2", "3"):
                        fresh[node]["inputs"]["text"] += " " * (i + 1)
                    server.post("/free", json={"unload_models": True, "free_memory": True}).raise_for_status()
                    time.sleep(1.0)
                    cold_encode.append(client.run(fresh)[0])
                warm, ksampler, decode, save, per_step, steady = [], [], [], [], [], []
                for i in range(args.runs):
                    prompt["5"]["inputs"]["seed"] = 1000 + i
                    total, messages = client.run(prompt)
                    times = node_times(messages)
                    warm.append(total)
                    ksampler.append(times.get("5", 0.0))
                    decode.append(times.get("6", 0.0))
                    save.append(times.get("7", 0.0))
                    per_step.append(times.get("5", 0.0) / args.steps)
                    steady.extend(step_times(messages, "5"))
            finally:
                client.close()
            peak = peak_rss(server.proc.pid)

    med = statistics.median
    print(f"txt2img, {'family ' + args.family if family else 'preset ' + args.preset}, {args.size}x{args.size}, "
          f"{args.steps} steps, {args.runs} runs each")
    if peak is not None:
        print(f"{'server peak resident memory':<34} {peak / 2**30:8.2f} GiB")
    print(line("cold (POST -> execution_success)", med(cold), reference.get("cold_median_s")))
    print(line("cold, prompts not seen before", med(cold_encode), reference.get("cold_median_s")))
    print(line("warm (POST -> execution_success)", med(warm), reference.get("warm_median_s")))
    print(line("warm KSampler", med(ksampler), reference.get("warm_ksampler_s")))
    print(line("per sampler step (KSampler / steps)", med(per_step), reference.get("warm_per_step_s")))
    if steady:
        print(line("steady step (progress messages)", med(steady), reference.get("warm_step_steady_s")))
    print(line("warm VAE decode", med(decode), reference.get("warm_vae_decode_s")))
    print(line("warm SaveImage", med(save), reference.get("warm_save_s")))
    if not comparable and steady and family is None:
        its = 1.0 / med(steady)
        print(f"{'sampler iterations per second':<34} {its:8.2f} it/s   (A100 diffusers: SDPA "
              f"{A100_DIFFUSERS_SDPA_ITS} it/s, torch.compile {A100_DIFFUSERS_COMPILE_ITS} it/s)")
    print("cold runs:", ", ".join(f"{t:.3f}" for t in cold), "| cold, new prompts:",
          ", ".join(f"{t:.3f}" for t in cold_encode), "| warm runs:", ", ".join(f"{t:.3f}" for t in warm))


if __name__ == "__main__":
    main()
