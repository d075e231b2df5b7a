"""MOGE_GEOMETRY as IMAGE: depth, turbo-coloured depth, normal maps (OpenGL / DirectX green), the mask.

Depth is shown as disparity (1 / depth), stretched per image between its
0.1 and 99.9 percentiles over the valid pixels, so one far or near outlier
does not flatten the rest; invalid pixels are black. Normals come from the
model's head, or, for a model without one, from the point map's neighbours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: polynomial fit of the turbo colour map (Anton Mikhailov's coefficients), per channel, degree 0..5
TURBO = (
    (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943),
    (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604),
    (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973),
)


def turbo(x: torch.Tensor) -> torch.Tensor:
    """[..., 3] colours for values in [0, 1]."""
    x = x.clamp(0, 1)
    powers = torch.stack([x ** i for i in range(6)], dim=-1)
    return (powers @ torch.tensor(TURBO, dtype=x.dtype, device=x.device).T).clamp(0, 1)


def disparity(depth: torch.Tensor) -> torch.Tensor:
    """[B, H, W] depth -> disparity in [0, 1] per image (percentile-clipped); 0 where depth is not valid."""
    out = torch.zeros_like(depth)
    for i, d in enumerate(depth):
        valid = torch.isfinite(d) & (d > 0)
        if not valid.any():
            continue
        disp = torch.where(valid, 1 / d.clamp_min(1e-6), torch.zeros_like(d))
        lo, hi = torch.quantile(disp[valid], torch.tensor([0.001, 0.999], dtype=disp.dtype, device=disp.device))
        out[i] = torch.where(valid, ((disp - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1), torch.zeros_like(d))
    return out


def normals_from_points(points: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] unit normals facing the camera, from central differences (zero where points are not finite)."""
    finite = torch.isfinite(points).all(dim=-1, keepdim=True)
    pts = torch.where(finite, points, torch.zeros_like(points)).permute(0, 3, 1, 2)
    dx = F.pad(pts[..., :, 2:] - pts[..., :, :-2], (1, 1, 0, 0))
    dy = F.pad(pts[..., 2:, :] - pts[..., :-2, :], (0, 0, 1, 1))
    # y points down in OpenCV axes, so dy x dx (not dx x dy) faces out of the surface
    n = F.normalize(torch.cross(dy, dx, dim=1), dim=1).permute(0, 2, 3, 1)
    return torch.where(finite, n, torch.zeros_like(n))


def render(geometry: dict, output: str) -> torch.Tensor:
    if output in ("depth", "depth_colored"):
        if "depth" not in geometry:
            raise ValueError("moge_geometry holds no depth")
        d = disparity(geometry["depth"].float())
        return turbo(d) if output == "depth_colored" else d[..., None].expand(*d.shape, 3).contiguous()
    if output in ("normal_opengl", "normal_directx"):
        if "normal" in geometry:
            n = geometry["normal"].float()
        elif "points" in geometry:
            n = normals_from_points(geometry["points"].float())
        else:
            raise ValueError("moge_geometry holds neither normals nor points to derive them from")
        # camera axes have z into the scene; a normal map's z points out of the surface, and OpenGL's y up
        flip = n.new_tensor([1.0, -1.0 if output == "normal_opengl" else 1.0, -1.0])
        return (n * flip * 0.5 + 0.5).clamp(0, 1)
    if output == "mask":
        if "mask" not in geometry:
            raise ValueError("moge_geometry holds no mask")
        m = geometry["mask"].float()
        return m[..., None].expand(*m.shape, 3).contiguous()
    raise ValueError(f"unknown MoGe rendering {output!r}; one of depth, depth_colored, normal_opengl, "
                     "normal_directx, mask")
