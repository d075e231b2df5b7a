"""Resizing of image and latent batches, shared by node packs.

``common_upscale`` is the one resize every core node and ComfyUI-style pack
uses (ComfyUI names it ``comfy.utils.common_upscale``): torch's interpolate
modes plus ``bislerp`` for latents and ``lanczos`` for images.
"""

from __future__ import annotations

from typing import Any


def common_upscale(samples: Any, width: int, height: int, method: str, crop: str) -> Any:
    """Resize [B, C, H, W] (or [B, C, T, H, W]) to (height, width).

    ``crop="center"`` first cuts to the target aspect ratio. Torch's modes run
    without antialiasing, as ComfyUI's do, so resized latents and images match.
    """
    import torch.nn.functional as F

    if crop == "center":
        old_w, old_h = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, old_h - y * 2).narrow(-1, x, old_w - x * 2)
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method == "lanczos":
        return lanczos(samples, width, height)
    if samples.ndim == 5:  # [B, C, T, H, W]: frames keep their count
        mode = "nearest" if method == "nearest-exact" else "trilinear"
        return F.interpolate(samples, size=(samples.shape[2], height, width), mode=mode)
    return F.interpolate(samples, size=(height, width), mode=method)


def _slerp(a: Any, b: Any, t: Any) -> Any:
    """Spherical interpolation of channel vectors (dim 1), magnitudes interpolated linearly."""
    import torch

    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    dot = (ua * ub).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    res = (torch.sin((1.0 - t) * omega) / so.clamp_min(1e-12)) * ua + (torch.sin(t * omega) / so.clamp_min(1e-12)) * ub
    res = torch.where(so.abs() < 1e-6, ua * (1.0 - t) + ub * t, res)
    return res * (na * (1.0 - t) + nb * t)


def _axis_coords(n_in: int, n_out: int) -> tuple[Any, Any, Any]:
    import torch

    pos = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp(0, n_in - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, pos - lo.float()


def bislerp(samples: Any, width: int, height: int) -> Any:
    """Bilinear resize whose two 1-d interpolations are slerps of the channel vectors (keeps latent norms)."""
    lo, hi, t = _axis_coords(samples.shape[-1], width)
    x = _slerp(samples[..., lo], samples[..., hi], t.view(1, 1, 1, -1))
    lo, hi, t = _axis_coords(samples.shape[-2], height)
    return _slerp(x[..., lo, :], x[..., hi, :], t.view(1, 1, -1, 1))


def lanczos(samples: Any, width: int, height: int) -> Any:
    """Per-image Lanczos resize through Pillow on 8-bit values, as image upscalers do."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for item in samples.movedim(1, -1).cpu():
        arr = np.clip(255.0 * item.numpy(), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr)
        res = np.asarray(img.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(res.reshape(height, width, -1)))
    return torch.stack(out).movedim(-1, 1).to(samples.device)
