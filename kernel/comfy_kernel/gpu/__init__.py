"""The GPU scheduler: devices, dtype policy, model memory and per-device workers.

Importing this package never imports torch; every function that needs torch
imports it when called, so a server that runs no model pays nothing for it.

- :mod:`.config`    ComfyUI's device/VRAM/dtype flags (:func:`add_arguments`, :class:`GpuConfig`)
- :mod:`.devices`   discovery, memory figures, the /system_stats ``devices`` list
- :mod:`.dtypes`    storage/compute dtype per model part and device
- :mod:`.memory`    :class:`ModelManager`: load, keep, offload, drop, pin
- :mod:`.streaming` low-VRAM layer-by-layer weight streaming
- :mod:`.loading`   memory-mapped .safetensors reads
- :mod:`.workers`   worker device assignment, ``current_device()``, the Worker interface
"""

from __future__ import annotations

from .config import GpuConfig, add_arguments
from .devices import DeviceInfo, MemoryStats, discover_devices, memory_stats, system_stats_devices
from .dtypes import DtypePolicy, PartDtype, dtype_policy, torch_dtype
from .memory import ModelHandle, ModelManager, OutOfMemory
from .workers import ThreadWorker, Worker, current_device, device_scope, worker_devices

_manager: ModelManager | None = None
_config: GpuConfig | None = None


def configure(config: GpuConfig) -> None:
    """Adopt the server's flags (call once at start-up; imports no torch).

    The process-wide manager is (re)built from them on next use; the default
    device of :func:`current_device` is discovered under them.
    """
    global _manager, _config
    from .workers import set_default_device

    _config, _manager = config, None
    set_default_device(None, config)


def model_manager() -> ModelManager:
    """The process-wide model manager, built on first use from the configured flags.

    Evicted models go to host memory, except with --gpu-only or on a
    CPU-only machine, where host memory *is* the device: they are dropped
    (memory-mapped files make the reload cheap).
    """
    global _manager
    if _manager is None:
        config = _config or GpuConfig()
        host_only = all(d.type == "cpu" for d in discover_devices(config))
        offload = None if config.vram_mode == "gpu-only" or host_only else "cpu"
        _manager = ModelManager(config=config, offload_device=offload)
    return _manager


__all__ = [
    "GpuConfig", "add_arguments", "configure", "model_manager",
    "DeviceInfo", "MemoryStats", "discover_devices", "memory_stats", "system_stats_devices",
    "DtypePolicy", "PartDtype", "dtype_policy", "torch_dtype",
    "ModelHandle", "ModelManager", "OutOfMemory",
    "Worker", "ThreadWorker", "current_device", "device_scope", "worker_devices",
]
