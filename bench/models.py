"""Model loading benchmark: disk read speed, safetensors -> device load, offload and reload.

Generates a random-weight SD1.5 checkpoint with the shared make_checkpoint.py
(or reuses it from .cache/checkpoints/), then measures:

- disk read: the file read once with a large buffer after asking the kernel
  to drop it from the page cache (cold-ish; without root this is advisory);
- load: safetensors -> device through the model manager (UNet, VAE and text
  encoder registered as three models), in GB/s of file size and as a share
  of the disk speed;
- offload (device -> host), reload (host -> device) and reload after a drop
  to disk (page cache warm).

On a CPU-only machine the "device" is the CPU: the load figure then includes
touching every page of the mapping, and offload is a no-op.

    python bench/models.py [--preset tiny|min|sd15] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "kernel"))

from comfy_kernel.gpu import ModelManager, discover_devices  # noqa: E402
from comfy_kernel.gpu.loading import weights_module  # noqa: E402

PARTS = {"unet": "model.diffusion_model.", "vae": "first_stage_model.", "text_encoder": "cond_stage_model."}
GB = 1e9


def checkpoint(preset: str, seed: int, make: Path) -> Path:
    """The cached checkpoint for ``preset``, generated on first use."""
    path = ROOT / ".cache" / "checkpoints" / f"sd15-{preset}-seed{seed}.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {path.name} with {make.name} ...", flush=True)
        subprocess.run([sys.executable, str(make), "--preset", preset, "--seed", str(seed),
                        "--out", str(path)], check=True, stdout=subprocess.DEVNULL)
    return path


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (best effort)."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_read_speed(path: Path, buffer: int = 64 * 1024**2) -> float:
    drop_page_cache(path)
    buf = bytearray(buffer)
    view = memoryview(buf)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return path.stat().st_size / (time.perf_counter() - start)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def touch(model) -> None:
    """Force every weight into memory (a CPU mapping is lazy until read)."""
    for t in model.buffers():
        if t.device.type == "cpu":
            t.view(-1)[:: max(1, 4096 // t.element_size())].sum()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", choices=["min", "tiny", "sd15"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: the first discovered device")
    parser.add_argument("--make-checkpoint", type=Path, default=ROOT.parent / "shared" / "reference" / "make_checkpoint.py")
    args = parser.parse_args(argv)

    device = args.device or discover_devices()[0].torch_device
    path = checkpoint(args.preset, args.seed, args.make_checkpoint)
    size = path.stat().st_size
    print(f"checkpoint  {path.name}  {size / GB:.3f} GB   device {device}")

    disk = disk_read_speed(path)
    print(f"disk read   {disk / GB:8.2f} GB/s  (page cache dropped first, 64 MiB buffer)")

    manager = ModelManager(device, offload_device="cpu")
    handles = [manager.register_file(path, weights_module, prefix=prefix) for prefix in PARTS.values()]
    weights = sum(h.size for h in handles)
    print(f"weights     {weights / GB:.3f} GB in {len(handles)} models (GB/s below are weight bytes per second)")
    drop_page_cache(path)

    def load_all() -> None:
        for h in handles:
            with manager.use(h) as model:
                touch(model)

    rows = [("load", timed(load_all, device))]
    rows.append(("offload", timed(lambda: manager.free_memory(device=device), device)))
    rows.append(("reload", timed(load_all, device)))
    manager.unload_all()
    rows.append(("from disk", timed(load_all, device)))  # page cache warm now

    for name, seconds in rows:
        speed = weights / seconds
        print(f"{name:<11} {seconds * 1000:8.1f} ms  {speed / GB:8.2f} GB/s  {speed / disk:7.2f}x disk read")
    manager.unload_all()


if __name__ == "__main__":
    main()
