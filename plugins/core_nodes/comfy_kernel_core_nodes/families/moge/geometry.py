"""From MoGe's affine point map to a camera: the focal length and depth shift, intrinsics, re-projection.

MoGe predicts points up to an unknown shift along z. The shift (and, when
the field of view is not given, the focal length) is what makes the points
project onto their own pixels: minimise ``|f * xy / (z + s) - uv|`` over the
valid pixels of a 64x64 nearest-neighbour copy of the map, where ``uv`` is
the view-plane grid (half diagonal 1). For a fixed shift the best focal
length is a closed form, so it is a one-dimensional least-squares problem in
``s``, solved here by Levenberg-Marquardt from ``s = 0`` (as Microsoft's code
does with SciPy), in float64, to convergence rather than SciPy's 0.1 % cost
tolerance. A map whose error keeps falling as the shift grows (no camera fits
it: random weights, a flat wall) has no answer; that gives NaN, and the
caller falls back to a default view instead of a focal length of 1e30.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import view_plane_uv

SOLVE_SIZE = (64, 64)
#: a shift this many times the largest depth means the error only flattens out towards infinity
RUNAWAY = 1e4


def _solve_shift(uv: torch.Tensor, xy: torch.Tensor, z: torch.Tensor, focal: float | None) -> tuple[float, float]:
    """(shift, focal) minimising the reprojection error; ``focal`` fixed when given."""

    def residual(s: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        depth = z + s
        p = xy / depth[:, None]
        dp = -p / depth[:, None]
        if focal is None:
            a, b = (p * uv).sum(), (p * p).sum()
            f = a / b
            df = ((dp * uv).sum() * b - a * 2 * (p * dp).sum()) / (b * b)
            jac = df * p + f * dp
        else:
            f = torch.tensor(focal, dtype=p.dtype)
            jac = f * dp
        return (f * p - uv).reshape(-1), jac.reshape(-1), float(f)

    s, damping = 0.0, 1e-3
    r, jac, f = residual(s)
    cost = float((r * r).sum())
    for _ in range(100):
        g, h = float((jac * r).sum()), float((jac * jac).sum())
        if not math.isfinite(h) or h == 0.0:
            break
        step = -g / (h * (1.0 + damping))
        r_new, jac_new, f_new = residual(s + step)
        cost_new = float((r_new * r_new).sum())
        if math.isfinite(cost_new) and cost_new <= cost:
            converged = cost - cost_new <= 1e-12 * max(cost, 1e-30) or abs(step) <= 1e-10 * (abs(s) + 1e-10)
            s, r, jac, f, cost = s + step, r_new, jac_new, f_new, cost_new
            damping = max(damping / 10.0, 1e-12)
            if converged:
                break
        else:
            damping *= 10.0
            if damping > 1e12:
                break
    if not abs(s) <= RUNAWAY * float(z.abs().max()):
        return math.nan, math.nan
    return s, f


def recover_focal_shift(points: torch.Tensor, mask: torch.Tensor | None,
                        focal: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of ``points`` [B, H, W, 3]: (focal relative to the half diagonal, z shift).

    ``focal`` [B] is kept when given. Fewer than two valid pixels give focal 1, shift 0; a map no
    camera fits gives NaN.
    """
    b, h, w, _ = points.shape
    uv = view_plane_uv(w, h, w / h, points.dtype, points.device)
    small = F.interpolate(points.permute(0, 3, 1, 2), SOLVE_SIZE, mode="nearest").permute(0, 2, 3, 1)
    uv_small = F.interpolate(uv.permute(2, 0, 1)[None], SOLVE_SIZE, mode="nearest")[0].permute(1, 2, 0)
    valid = None if mask is None else F.interpolate(mask.float()[:, None], SOLVE_SIZE, mode="nearest")[:, 0] > 0
    focals, shifts = [], []
    for i in range(b):
        pts, grid = small[i].double().cpu(), uv_small.double().cpu()
        if valid is not None:
            keep = valid[i].cpu()
            pts, grid = pts[keep], grid[keep]
        pts, grid = pts.reshape(-1, 3), grid.reshape(-1, 2)
        if pts.shape[0] < 2:
            focals.append(1.0)
            shifts.append(0.0)
            continue
        given = None if focal is None else float(focal[i])
        s, f = _solve_shift(grid, pts[:, :2], pts[:, 2], given)
        focals.append(f if given is None else given)
        shifts.append(s)
    as_tensor = dict(dtype=points.dtype, device=points.device)
    return torch.tensor(focals, **as_tensor), torch.tensor(shifts, **as_tensor)


def focal_from_fov(fov_x_degrees: float, aspect: float) -> float:
    """The focal length relative to the half diagonal for a horizontal field of view."""
    return aspect / math.sqrt(1 + aspect ** 2) / math.tan(math.radians(fov_x_degrees) / 2)


def intrinsics(focal: torch.Tensor, aspect: float) -> torch.Tensor:
    """[B, 3, 3] OpenCV intrinsics in image-size units (principal point at the centre)."""
    half_diagonal = focal / 2 * math.sqrt(1 + aspect ** 2)
    fx, fy = half_diagonal / aspect, half_diagonal
    zero, one, half = torch.zeros_like(fx), torch.ones_like(fx), torch.full_like(fx, 0.5)
    return torch.stack([fx, zero, half, zero, fy, half, zero, zero, one], dim=-1).unflatten(-1, (3, 3))


def depth_to_points(depth: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Un-project each pixel centre of ``depth`` [B, H, W] through ``k`` [B, 3, 3]: [B, H, W, 3]."""
    _, h, w = depth.shape
    u = (torch.arange(w, dtype=depth.dtype, device=depth.device) + 0.5) / w
    v = (torch.arange(h, dtype=depth.dtype, device=depth.device) + 0.5) / h
    fx, fy, cx, cy = (k[:, 0, 0, None, None], k[:, 1, 1, None, None], k[:, 0, 2, None, None], k[:, 1, 2, None, None])
    x = (u[None, None, :] - cx) / fx * depth
    y = (v[None, :, None] - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-1)
