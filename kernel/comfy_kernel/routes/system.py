"""``/system_stats``, ``/features``, ``/health`` and ``/plugins``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import COMFYUI_COMPAT_VERSION, __version__
from ..config import redact_argv
from ..gpu.devices import loaded_torch
from ..http import json_response
from ..kernel import Kernel
from ..routing import RouteTable

log = logging.getLogger(__name__)


def _memory() -> tuple[int, int]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:  # pragma: no cover - psutil is a dependency
        return 0, 0


def _torch_version() -> str:
    """The installed torch version, without importing torch (start-up stays fast)."""
    torch = loaded_torch()
    if torch is not None:
        return str(torch.__version__)
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return ""


def cpu_device(ram_total: int, ram_free: int) -> dict[str, Any]:
    return {"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
            "torch_vram_total": ram_total, "torch_vram_free": ram_free}


def devices(kernel: Kernel) -> list[dict[str, Any]]:
    if loaded_torch() is None:
        # Importing torch takes seconds; until it is imported (by a node, the
        # scheduler or the warm-up), the CPU is the only device this process has used.
        return [cpu_device(*_memory())]
    try:
        from ..gpu import GpuConfig, system_stats_devices

        return list(system_stats_devices(GpuConfig.from_args(kernel.config)))
    except Exception:  # the HTTP answer must not depend on a device probe succeeding
        log.exception("device discovery failed; reporting the CPU only")
        return [cpu_device(*_memory())]


def system_stats(kernel: Kernel) -> dict[str, Any]:
    ram_total, ram_free = _memory()
    system: dict[str, Any] = {
        "os": os.name,
        "ram_total": ram_total,
        "ram_free": ram_free,
        "comfyui_version": COMFYUI_COMPAT_VERSION,
        "comfy_kernel_version": __version__,
        "required_frontend_version": None,
        "installed_templates_version": None,
        "required_templates_version": None,
        "python_version": sys.version,
        "pytorch_version": _torch_version(),
        "embedded_python": os.path.split(os.path.split(sys.executable)[0])[1] == "python_embeded",
        "argv": redact_argv(sys.argv),
    }
    devs = devices(kernel)
    for extra in kernel.host.call_each("ck_system_stats", kernel=kernel):
        if not extra:
            continue
        extra = dict(extra)
        devs.extend(extra.pop("devices", []) or [])
        system.update(extra)
    if isinstance(system.get("argv"), list):  # a plugin may have replaced it with the raw command line
        system["argv"] = redact_argv([str(arg) for arg in system["argv"]])
    return {"system": system, "devices": devs}


def register(routes: RouteTable, kernel: Kernel) -> None:
    @routes.get("/system_stats")
    async def get_system_stats(request: Request) -> Response:
        return json_response(system_stats(kernel))

    @routes.get("/features")
    async def get_features(request: Request) -> Response:
        return json_response(kernel.feature_flags())

    @routes.get("/health")
    async def get_health(request: Request) -> Response:
        failed = [r.name for r in kernel.host.failed()]
        return json_response({"status": "ok", "version": __version__, "queue_remaining": kernel.queue_remaining(),
                              "failed_plugins": failed, "warmup": kernel.warmup_state})

    @routes.get("/plugins")
    async def get_plugins(request: Request) -> Response:
        return json_response(kernel.host.as_list())
