"""The worker's device and the dtype policy for each model part, from the kernel's GPU scheduler."""

from __future__ import annotations

import torch


def current_device() -> torch.device:
    from comfy_kernel import gpu

    return torch.device(gpu.current_device().torch_device)


def _policy(part: str):
    from comfy_kernel import gpu

    return gpu.dtype_policy(gpu.current_device(), gpu.model_manager().config).part(part)


def storage_dtype(part: str) -> torch.dtype:
    """How ``part`` ("unet", "text_encoder", "vae") is stored on the current worker's device."""
    from comfy_kernel import gpu

    return gpu.torch_dtype(_policy(part).storage)


def compute_dtype(part: str) -> torch.dtype:
    """What ``part``'s layers compute in on the current worker's device."""
    from comfy_kernel import gpu

    return gpu.torch_dtype(_policy(part).compute)
