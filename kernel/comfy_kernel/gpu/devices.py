"""Device discovery and memory figures.

torch is imported inside the functions only: the kernel must start (and serve
its HTTP API) without paying for a torch import, and must still report a CPU
device on a machine without torch at all.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from .config import GpuConfig

#: Memory kept free on a CUDA device when --reserve-vram is not given
#: (room for the CUDA context, cuDNN workspaces and activations).
DEFAULT_CUDA_RESERVE = 400 * 1024**2


@dataclass(frozen=True)
class DeviceInfo:
    """One compute device: ``type`` is "cuda", "mps", "xpu" or "cpu"; ``index`` is None on the CPU."""

    type: str
    index: int | None = None
    name: str = ""

    @property
    def torch_device(self) -> str:
        """The string torch accepts for this device ("cuda:1", "cpu")."""
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __str__(self) -> str:
        return self.torch_device


@dataclass(frozen=True)
class MemoryStats:
    """Bytes, in /system_stats terms: ``free`` counts torch's reserved-but-unused memory as free."""

    total: int
    free: int
    torch_total: int = 0
    torch_free: int = 0


def _torch() -> Any | None:
    """torch if it is installed, else None (imported on first use only)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def load_torch_libraries() -> bool:
    """Load torch's shared libraries without holding the GIL, so that ``import torch`` later is shorter.

    Most of an ``import torch`` is the dynamic loader relocating libtorch
    (hundreds of MB), and the interpreter holds the GIL through it: every other
    thread, the server's included, stops for that long. Calling the C library's
    ``dlopen`` through ctypes releases the GIL, and the import then finds the
    libraries loaded. Done as torch does it (its global dependencies with
    RTLD_GLOBAL, then its extension with the interpreter's flags); skipped
    where that could differ (not Linux, torch already imported or asked to load
    with RTLD_GLOBAL, CUDA builds, which load more libraries in between).
    Returns whether the libraries were loaded here.
    """
    import ctypes
    import glob
    import importlib.util
    import os

    if not sys.platform.startswith("linux") or "torch" in sys.modules or os.environ.get("TORCH_USE_RTLD_GLOBAL"):
        return False
    try:
        spec = importlib.util.find_spec("torch")
        root = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
        if root is None:
            return False
        extension = glob.glob(os.path.join(root, "_C.*.so"))
        libc = ctypes.CDLL(None)
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.dlopen.restype = ctypes.c_void_p
        deps = os.path.join(root, "lib", "libtorch_global_deps.so")
        if len(extension) != 1 or not libc.dlopen(deps.encode(), os.RTLD_NOW | os.RTLD_GLOBAL):
            return False
        with open("/proc/self/maps") as f:
            if "libcudart" in f.read():
                return False
        return bool(libc.dlopen(extension[0].encode(), sys.getdlopenflags()))
    except Exception:
        return False


def torch_loaded() -> bool:
    """Whether torch is imported already (completely: not while another thread is importing it)."""
    return loaded_torch() is not None


def loaded_torch() -> Any | None:
    """torch if it is completely imported, else None; never imports it, never waits for an import.

    While a thread imports torch (the background warm-up), ``sys.modules``
    already holds the half-initialised module, and ``import torch`` elsewhere
    would block until it is done: callers that must stay quick check here.
    """
    torch = sys.modules.get("torch")
    if torch is None or getattr(getattr(torch, "__spec__", None), "_initializing", False) \
            or not hasattr(torch, "__version__"):
        return None
    return torch


CPU = DeviceInfo("cpu", None, "cpu")


def discover_devices(config: GpuConfig | None = None) -> list[DeviceInfo]:
    """The devices the scheduler may use, default device first.

    CUDA devices (filtered by --cuda-device) win over Apple MPS, which wins
    over the CPU; --cpu, or no torch, gives the CPU alone.
    """
    config = config or GpuConfig()
    torch = None if config.cpu else _torch()
    if torch is None:
        return [CPU]
    if torch.cuda.is_available():
        wanted = config.cuda_devices or tuple(range(torch.cuda.device_count()))
        count = torch.cuda.device_count()
        found = [DeviceInfo("cuda", i, torch.cuda.get_device_name(i)) for i in wanted if 0 <= i < count]
        if found:
            return found
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return [DeviceInfo("xpu", i, xpu.get_device_name(i)) for i in range(xpu.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return [DeviceInfo("mps", None, "mps")]
    return [CPU]


def ram_stats() -> MemoryStats:
    """Physical RAM: total and *available* (what the kernel can use without swapping)."""
    try:
        import psutil
    except ImportError:
        return _proc_meminfo()
    vm = psutil.virtual_memory()
    return MemoryStats(total=int(vm.total), free=int(vm.available))


def _proc_meminfo() -> MemoryStats:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except OSError:
        return MemoryStats(0, 0)
    return MemoryStats(total=values.get("MemTotal", 0), free=values.get("MemAvailable", values.get("MemFree", 0)))


def memory_stats(device: DeviceInfo | str) -> MemoryStats:
    """Total and free memory of ``device`` (RAM figures on cpu and mps, which share system memory)."""
    dev = parse_device(device)
    if dev.type == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(dev.index)
        stats = torch.cuda.memory_stats(dev.index)
        reserved = int(stats.get("reserved_bytes.all.current", 0))
        active = int(stats.get("active_bytes.all.current", 0))
        return MemoryStats(total=int(total), free=int(free) + reserved - active,
                           torch_total=reserved, torch_free=reserved - active)
    if dev.type == "xpu":
        import torch

        total = int(torch.xpu.get_device_properties(dev.index).total_memory)
        reserved = int(torch.xpu.memory_reserved(dev.index))
        active = int(torch.xpu.memory_allocated(dev.index))
        return MemoryStats(total=total, free=total - active, torch_total=reserved, torch_free=reserved - active)
    ram = ram_stats()
    return MemoryStats(total=ram.total, free=ram.free, torch_total=ram.total, torch_free=ram.free)


def parse_device(device: DeviceInfo | str) -> DeviceInfo:
    """Accept a DeviceInfo or a torch device string ("cuda:0", "cpu", "cuda")."""
    if isinstance(device, DeviceInfo):
        return device
    kind, _, index = str(device).partition(":")
    if kind == "cuda" and not index:
        index = "0"
    return DeviceInfo(kind, int(index) if index else None, kind)


def reserve_bytes(device: DeviceInfo | str, config: GpuConfig | None = None) -> int:
    """Memory the manager leaves untouched on ``device`` (--reserve-vram, or a default on CUDA)."""
    config = config or GpuConfig()
    if config.reserve_bytes is not None:
        return config.reserve_bytes
    return DEFAULT_CUDA_RESERVE if parse_device(device).type == "cuda" else 0


def device_display_name(device: DeviceInfo) -> str:
    """The /system_stats name: "cuda:0 <GPU name> : <allocator backend>", "xpu:0 <name>", or the type."""
    if device.type == "cuda":
        import torch

        try:
            backend = torch.cuda.get_allocator_backend()
        except Exception:  # older torch or an uninitialised allocator
            backend = "native"
        return f"{device.torch_device} {device.name} : {backend}"
    if device.type == "xpu":
        return f"{device.torch_device} {device.name}"
    return device.type


def system_stats_devices(config: GpuConfig | None = None,
                         devices: list[DeviceInfo] | None = None) -> list[dict[str, Any]]:
    """The ``devices`` list of GET /system_stats: default device first, then the others."""
    out = []
    for dev in devices if devices is not None else discover_devices(config):
        mem = memory_stats(dev)
        out.append({"name": device_display_name(dev), "type": dev.type, "index": dev.index,
                    "vram_total": mem.total, "vram_free": mem.free,
                    "torch_vram_total": mem.torch_total, "torch_vram_free": mem.torch_free})
    return out
