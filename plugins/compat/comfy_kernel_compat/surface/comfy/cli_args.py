"""ComfyUI's ``comfy.cli_args``: ``args`` reads the server's parsed flags.

Flags comfy-kernel shares with ComfyUI come from the running server's
configuration; ComfyUI-only flags read as their ComfyUI defaults (mostly
False/None), so ``if args.some_flag:`` in a pack behaves as on a default
ComfyUI. Assignments are kept and win over both.
"""

from __future__ import annotations

import enum
from typing import Any

from comfy_kernel_compat import state


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class PerformanceFeature(enum.Enum):
    Fp16Accumulation = "fp16_accumulation"
    Fp8MatrixMultiplication = "fp8_matrix_mult"
    CublasOps = "cublas_ops"


_DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1", "port": 8188, "preview_size": 512, "cache_lru": 0, "cache_ram": 0.0,
    "default_hashing_function": "sha256", "verbose": "INFO", "front_end_version": "comfyanonymous/ComfyUI@latest",
    "fast": set(), "cuda_device": None, "directml": None, "oneapi_device_selector": None,
    "extra_model_paths_config": None, "whitelist_custom_nodes": [], "reserve_vram": None,
    "max_upload_size": 100.0, "database_url": None, "user_directory": None,
}


class _Args:
    """Attribute access to the flags; unknown ComfyUI flags are False."""

    def __init__(self) -> None:
        object.__setattr__(self, "_overrides", {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        overrides = object.__getattribute__(self, "_overrides")
        if name in overrides:
            return overrides[name]
        kernel = state.kernel()
        config = kernel.config if kernel is not None else None
        if config is not None and hasattr(config, name):
            value = getattr(config, name)
            if name == "preview_method":
                return LatentPreviewMethod(value or "none")
            return value
        if name == "preview_method":
            return LatentPreviewMethod.NoPreviews
        return _DEFAULTS.get(name, False)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__getattribute__(self, "_overrides")[name] = value

    def __contains__(self, name: str) -> bool:
        return True


args = _Args()


def is_valid_directory(path: str | None) -> str | None:
    import argparse
    import os

    if path is None:
        return None
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is not a valid directory.")
    return path

#: ComfyUI's default frontend version string (``--front-end-version``).
DEFAULT_VERSION_STRING = "comfyanonymous/ComfyUI@latest"
