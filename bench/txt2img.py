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
With ``--preset sd15 --size 512`` (needs a CUDA GPU to be quick) it reports
sampler iterations per second on the full-size SD1.5 layout instead.
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
CACHE = HERE.parent / ".cache" / "checkpoints"
A100_DIFFUSERS_SDPA_ITS = 31.0
A100_DIFFUSERS_COMPILE_ITS = 37.0


def checkpoint_path(preset: str, explicit: str | None) -> Path:
    """The cached checkpoint of ``preset`` (seed 0), generated with the shared script when missing."""
    if explicit:
        return Path(explicit)
    target = CACHE / f"sd15-{preset}-seed0.safetensors"
    if not target.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        subprocess.run([sys.executable, str(REFERENCE / "make_checkpoint.py"), "--preset", preset, "--seed", "0",
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


class Client:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client_id = uuid.uuid4().hex
        self._ctx = server.ws(self.client_id)
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


def line(label: str, ours: float, theirs: float | None, unit: str = "s") -> str:
    if theirs:
        return f"{label:<34} {ours:8.3f} {unit}   ComfyUI {theirs:8.3f} {unit}   ratio {ours / theirs:5.2f}x"
    return f"{label:<34} {ours:8.3f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--checkpoint", help="checkpoint file (default: the cached tiny preset)")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "min", "sd15"])
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the server (default: torch's choice)")
    parser.add_argument("extra", nargs="*", help="extra flags for comfy-kernel serve")
    args = parser.parse_args()

    prompt = json.loads((REFERENCE / "workflows" / "txt2img.json").read_text())
    prompt["4"]["inputs"].update(width=args.size, height=args.size)
    prompt["5"]["inputs"]["steps"] = args.steps
    reference = json.loads((REFERENCE / "comfyui_speed.json").read_text())["txt2img"]
    comparable = args.preset == "tiny" and args.size == 64 and args.steps == 4
    if not comparable:
        reference = {}

    checkpoint = checkpoint_path(args.preset, args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        prepare_base(base, checkpoint)
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

    med = statistics.median
    print(f"txt2img, preset {args.preset}, {args.size}x{args.size}, {args.steps} steps, {args.runs} runs each")
    print(line("cold (POST -> execution_success)", med(cold), reference.get("cold_median_s")))
    print(line("cold, prompts not seen before", med(cold_encode), reference.get("cold_median_s")))
    print(line("warm (POST -> execution_success)", med(warm), reference.get("warm_median_s")))
    print(line("warm KSampler", med(ksampler), reference.get("warm_ksampler_s")))
    print(line("per sampler step (KSampler / steps)", med(per_step), reference.get("warm_per_step_s")))
    if steady:
        print(line("steady step (progress messages)", med(steady), reference.get("warm_step_steady_s")))
    print(line("warm VAE decode", med(decode), reference.get("warm_vae_decode_s")))
    print(line("warm SaveImage", med(save), reference.get("warm_save_s")))
    if not comparable and steady:
        its = 1.0 / med(steady)
        print(f"{'sampler iterations per second':<34} {its:8.2f} it/s   (A100 diffusers: SDPA "
              f"{A100_DIFFUSERS_SDPA_ITS} it/s, torch.compile {A100_DIFFUSERS_COMPILE_ITS} it/s)")
    print("cold runs:", ", ".join(f"{t:.3f}" for t in cold), "| cold, new prompts:",
          ", ".join(f"{t:.3f}" for t in cold_encode), "| warm runs:", ", ".join(f"{t:.3f}" for t in warm))


if __name__ == "__main__":
    main()
