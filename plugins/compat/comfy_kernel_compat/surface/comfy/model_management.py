"""ComfyUI's ``comfy.model_management`` on comfy-kernel's GPU scheduler.

Devices are the calling worker's (``comfy_kernel.gpu.current_device``), so a
pack running on the second GPU worker gets that GPU. Dtypes follow the
scheduler's policy and the server flags. Interrupts are per prompt: the
checkpoint raises only in the prompt that was interrupted. Model loading and
freeing go to the process's :class:`~comfy_kernel.gpu.ModelManager`; objects
ComfyUI would wrap in a ``ModelPatcher`` are accepted as they are.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from comfy_kernel import gpu as _gpu
from comfy_kernel import progress as _progress
from comfy_kernel.gpu.devices import memory_stats as _memory_stats
from comfy_kernel.progress import InterruptProcessingException  # noqa: F401 - part of the module's API

log = logging.getLogger("comfy.model_management")


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


def _config() -> Any:
    return _gpu._config or _gpu.GpuConfig()


_VRAM_BY_MODE = {"gpu-only": VRAMState.HIGH_VRAM, "high": VRAMState.HIGH_VRAM, "normal": VRAMState.NORMAL_VRAM,
                 "low": VRAMState.LOW_VRAM, "no": VRAMState.NO_VRAM}


def __getattr__(name: str) -> Any:
    if name in ("vram_state", "set_vram_to"):
        device = _gpu.current_device()
        return VRAMState.DISABLED if device.type == "cpu" else _VRAM_BY_MODE[_config().vram_mode]
    if name == "cpu_state":
        device = _gpu.current_device()
        return {"cpu": CPUState.CPU, "mps": CPUState.MPS}.get(device.type, CPUState.GPU)
    if name == "OOM_EXCEPTION":
        import torch

        return torch.cuda.OutOfMemoryError
    if name == "torch_version":
        import torch

        return torch.__version__
    if name == "interrupt_processing":
        return processing_interrupted()
    if name == "current_loaded_models":
        return [LoadedModel(h) for h in loaded_models()]
    if name in ("total_vram", "total_ram"):
        return _total_mb(name == "total_vram")
    if name == "FORCE_FP32":
        return _config().force_precision == "fp32"
    if name == "EXTRA_RESERVED_VRAM":
        return extra_reserved_memory()
    if name == "FLOAT8_TYPES":
        return get_supported_float8_types()
    raise AttributeError(f"module 'comfy.model_management' has no attribute {name!r}")


# --- devices -----------------------------------------------------------------------------------


def get_torch_device() -> Any:
    """The torch device of the worker running the caller."""
    import torch

    return torch.device(_gpu.current_device().torch_device)


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def intermediate_device() -> Any:
    return get_torch_device() if _config().vram_mode == "gpu-only" else _cpu()


def unet_offload_device() -> Any:
    return get_torch_device() if _config().vram_mode in ("gpu-only", "high") else _cpu()


def text_encoder_offload_device() -> Any:
    return get_torch_device() if _config().vram_mode == "gpu-only" else _cpu()


def vae_offload_device() -> Any:
    return get_torch_device() if _config().vram_mode == "gpu-only" else _cpu()


def unet_inital_load_device(parameters: int = 0, dtype: Any = None) -> Any:
    return get_torch_device()


def text_encoder_device() -> Any:
    return get_torch_device()


def vae_device() -> Any:
    return get_torch_device()


def cpu_mode() -> bool:
    return _gpu.current_device().type == "cpu"


def mps_mode() -> bool:
    return _gpu.current_device().type == "mps"


def is_device_type(device: Any, kind: str) -> bool:
    return getattr(device, "type", None) == kind


def is_device_cpu(device: Any) -> bool:
    return is_device_type(device, "cpu")


def is_device_mps(device: Any) -> bool:
    return is_device_type(device, "mps")


def is_device_cuda(device: Any) -> bool:
    return is_device_type(device, "cuda")


def is_nvidia() -> bool:
    return _gpu.current_device().type == "cuda"


def is_intel_xpu() -> bool:
    return _gpu.current_device().type == "xpu"


def get_torch_device_name(device: Any) -> str:
    from comfy_kernel.gpu.devices import device_display_name, parse_device

    return device_display_name(parse_device(str(device)))


def xformers_enabled() -> bool:
    """comfy-kernel's attention is PyTorch's scaled_dot_product_attention; xformers is never used."""
    return False


def xformers_enabled_vae() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def pytorch_attention_flash_attention() -> bool:
    return is_nvidia()


# --- memory ---------------------------------------------------------------------------------------


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> Any:
    stats = _memory_stats(str(dev) if dev is not None else _gpu.current_device())
    return (stats.total, stats.torch_total) if torch_total_too else stats.total


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> Any:
    stats = _memory_stats(str(dev) if dev is not None else _gpu.current_device())
    return (stats.free, stats.torch_free) if torch_free_too else stats.free


def free_memory(memory_required: int, device: Any, keep_loaded: list[Any] | None = None) -> int:
    """Offload unpinned models from ``device`` until ``memory_required`` bytes are free."""
    return _gpu.model_manager().free_memory(memory_required, str(device) if device is not None else None)


def unload_all_models() -> None:
    _gpu.model_manager().unload_all()


def cleanup_models(keep_clone_weights_loaded: bool = False) -> None:
    """The scheduler drops unreferenced models itself."""


def cleanup_models_gc() -> None:
    import gc

    gc.collect()


def soft_empty_cache(force: bool = False) -> None:
    """Return cached, unused device memory to the driver."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def load_models_gpu(models: list[Any], memory_required: int = 0, force_patch_weights: bool = False,
                    minimum_memory_required: int | None = None, force_full_load: bool = False) -> None:
    """Make sure ``models`` are on their device.

    Handles of the kernel's model manager are loaded through it; objects with
    ComfyUI's ``ModelPatcher`` interface get ``patch_model``; plain
    ``torch.nn.Module`` objects are moved to the worker's device.
    """
    manager = _gpu.model_manager()
    if memory_required:
        manager.free_memory(memory_required)
    for model in models:
        if isinstance(model, _gpu.ModelHandle):
            manager.load(model)
        elif hasattr(model, "patch_model"):
            model.patch_model(device_to=get_torch_device())
        elif hasattr(model, "to"):
            model.to(get_torch_device())


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def loaded_models(only_currently_used: bool = False) -> list[Any]:
    return [h for h in _gpu.model_manager().handles() if h.loaded]


def module_size(module: Any) -> int:
    from comfy_kernel.gpu.memory import module_size as size

    return size(module)


def cast_to_device(tensor: Any, device: Any, dtype: Any, copy: bool = False) -> Any:
    """``tensor`` on ``device`` as ``dtype``; a copy only when asked or when something changes."""
    return tensor.to(device=device, dtype=dtype, copy=copy, non_blocking=False)


def cast_to(weight: Any, dtype: Any = None, device: Any = None, non_blocking: bool = False,
            copy: bool = False, stream: Any = None) -> Any:
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def device_supports_non_blocking(device: Any) -> bool:
    return is_device_cuda(device)


# --- dtypes ---------------------------------------------------------------------------------------


def _policy_dtype(part: str, compute: bool = False) -> Any:
    import torch

    policy = _gpu.dtype_policy(_gpu.current_device(), _config()).part(part)
    return getattr(torch, policy.compute if compute else policy.storage)


def unet_dtype(device: Any = None, model_params: int = 0, supported_dtypes: Any = None,
               weight_dtype: Any = None) -> Any:
    return _policy_dtype("unet")


def unet_manual_cast(weight_dtype: Any, inference_device: Any, supported_dtypes: Any = None) -> Any:
    import torch

    compute = _policy_dtype("unet", compute=True)
    return None if weight_dtype == compute or weight_dtype is None else (compute or torch.float32)


def text_encoder_dtype(device: Any = None) -> Any:
    return _policy_dtype("text_encoder")


def vae_dtype(device: Any = None, allowed_dtypes: Any = ()) -> Any:
    return _policy_dtype("vae")


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    import torch

    return _policy_dtype("unet") == torch.float16


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    import torch

    return _policy_dtype("unet") == torch.bfloat16


def supports_dtype(device: Any, dtype: Any) -> bool:
    import torch

    if dtype == torch.float32:
        return True
    if is_device_cpu(device):
        return False
    return dtype in (torch.float16, torch.bfloat16)


def supports_cast(device: Any, dtype: Any) -> bool:
    return True


def dtype_size(dtype: Any) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


# --- interrupts ------------------------------------------------------------------------------------


def interrupt_current_processing(value: bool = True) -> None:
    """Ask the prompt this code runs for to stop at its next checkpoint (outside a prompt: every prompt)."""
    if _progress.current_run() is not None:
        _progress.interrupt_current_processing(value)
        return
    from comfy_kernel_compat import state

    kernel = state.kernel()
    if value and kernel is not None and kernel.executor is not None:
        kernel.executor.interrupt()


def processing_interrupted() -> bool:
    return _progress.processing_interrupted()


def throw_exception_if_processing_interrupted() -> None:
    """The interrupt checkpoint: raises :class:`InterruptProcessingException` once after an interrupt."""
    _progress.throw_exception_if_processing_interrupted()



# --- the rest of ComfyUI's public set: constants and queries with comfy-kernel's answers ---------

DISABLE_SMART_MEMORY = False
ENABLE_PYTORCH_ATTENTION = True
MIN_WEIGHT_MEMORY_RATIO = 0.4
NUM_STREAMS = 0
PRIORITIZE_FP16 = False
STREAMS: dict[Any, Any] = {}
stream_counters: dict[Any, Any] = {}
SUPPORT_FP8_OPS = False
WINDOWS = __import__("os").name == "nt"
XFORMERS_ENABLED_VAE = False
XFORMERS_VERSION = ""
directml_enabled = False
lowvram_available = True
xpu_available = False
interrupt_processing_mutex = __import__("threading").RLock()


class LoadedModel:
    """A model the manager holds, in the shape ComfyUI's ``current_loaded_models`` entries have."""

    def __init__(self, model: Any):
        self.model = model
        self.device = getattr(model, "device", None)
        self.currently_used = True

    def model_memory(self) -> int:
        return int(getattr(self.model, "size", 0) or 0)

    def model_loaded_memory(self) -> int:
        return self.model_memory() if getattr(self.model, "loaded", False) else 0

    def model_offloaded_memory(self) -> int:
        return self.model_memory() - self.model_loaded_memory()


def _total_mb(vram: bool) -> float:
    if vram:
        return get_total_memory(get_torch_device()) / (1024 * 1024)
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1024 * 1024)


def extra_reserved_memory() -> int:
    return _config().reserve_bytes or 0


def minimum_inference_memory() -> int:
    return int(1024 ** 3 * 0.8) + extra_reserved_memory()


def maximum_vram_for_weights(device: Any = None) -> int:
    return int(get_total_memory(device) * 0.88 - minimum_inference_memory())


def offloaded_memory(loaded_models: Any, device: Any) -> int:
    return 0


def use_more_memory(extra_memory: int, loaded_models: Any, device: Any) -> None:
    """The model manager sizes its own loads."""


def get_supported_float8_types() -> list[Any]:
    import torch

    return [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                                        "float8_e8m0fnu") if hasattr(torch, n)]


def pick_weight_dtype(dtype: Any, fallback_dtype: Any, device: Any = None) -> Any:
    if dtype is None:
        return fallback_dtype
    if dtype_size(dtype) > dtype_size(fallback_dtype) or not supports_cast(device, dtype):
        return fallback_dtype
    return dtype


def text_encoder_initial_device(load_device: Any, offload_device: Any, model_size: int = 0) -> Any:
    return offload_device


def get_autocast_device(dev: Any) -> str:
    return getattr(dev, "type", "cuda")


def get_offload_stream(device: Any) -> None:
    return None


def sync_stream(device: Any, stream: Any) -> None:
    """No offload streams are used."""


def device_should_use_non_blocking(device: Any) -> bool:
    return False


def force_channels_last() -> bool:
    return False


def force_upcast_attention_dtype() -> Any:
    return None


def extended_fp16_support() -> bool:
    return True


def supports_fp8_compute(device: Any = None) -> bool:
    return False


def flash_attention_enabled() -> bool:
    return False


def sage_attention_enabled() -> bool:
    return False


def pytorch_attention_enabled_vae() -> bool:
    return True


def mac_version() -> Any:
    return None


def amd_min_version(device: Any = None, min_rdna_version: int = 0) -> bool:
    return False


def is_amd() -> bool:
    import torch

    return bool(getattr(torch.version, "hip", None)) and get_torch_device().type == "cuda"


def is_directml_enabled() -> bool:
    return False


def is_device_xpu(device: Any) -> bool:
    return is_device_type(device, "xpu")


def is_ascend_npu() -> bool:
    return False


def is_mlu() -> bool:
    return False


def is_ixuca() -> bool:
    return False
