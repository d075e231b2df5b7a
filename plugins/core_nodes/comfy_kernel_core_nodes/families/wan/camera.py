"""Camera trajectories as Plücker ray embeddings, the input of Wan's Fun camera-control models.

A preset names a rotation (Euler angles, in units of 60 degrees) and a
translation (in units of 1.5) that the camera reaches, scaled by ``speed``,
at the end of the clip; frame i of n is at fraction i / n of it. Every pixel
of every frame becomes a ray (origin o, unit direction d, both in the first
frame's camera space) stored as the six numbers (o x d, d) (Plücker
coordinates). The intrinsics are fractions of the frame (fx, fy, cx, cy); the
focal length is corrected for the 16:9 frames the models were trained on, so
a narrower or wider frame keeps the same field of view along its shorter
side. The first frame is repeated to four and each group of four frames is
stacked into 24 channels, one group per latent frame.
"""

from __future__ import annotations

import math

import torch

from .camera_presets import PRESETS

ANGLE_UNIT = math.pi / 3
TRANSLATION_UNIT = 1.5
#: the frame the trajectories were made for (the focal lengths are fractions of it)
POSE_WIDTH, POSE_HEIGHT = 1280, 720


def rotation(x: float, y: float, z: float) -> torch.Tensor:
    """Rz @ Ry @ Rx for angles in radians (float64)."""
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return rz @ ry @ rx


def trajectory(pose: str, frames: int, speed: float = 1.0) -> torch.Tensor:
    """Camera-to-world matrices [frames, 4, 4] (float64) of a preset, relative to the first frame."""
    angles, shift = PRESETS[pose]
    out = torch.zeros(frames, 4, 4, dtype=torch.float64)
    for i in range(frames):
        f = i / frames * speed
        out[i, :3, :3] = rotation(*(f * ANGLE_UNIT * a for a in angles))
        out[i, :3, 3] = torch.tensor([f * TRANSLATION_UNIT * s for s in shift], dtype=torch.float64)
        out[i, 3, 3] = 1.0
    return torch.linalg.inv(out[0]) @ out


def pixel_intrinsics(width: int, height: int, fx: float, fy: float, cx: float,
                     cy: float) -> tuple[float, float, float, float]:
    """Focal lengths and principal point in pixels; the focal length of the longer-than-trained side grows."""
    pose_ratio = POSE_WIDTH / POSE_HEIGHT
    if pose_ratio > width / height:
        fx = height * pose_ratio * fx / width
    else:
        fy = width / pose_ratio * fy / height
    return fx * width, fy * height, cx * width, cy * height


def plucker_rays(c2w: torch.Tensor, width: int, height: int,
                 intrinsics: tuple[float, float, float, float]) -> torch.Tensor:
    """[frames, height, width, 6]: (o x d, d) of the ray through each pixel centre."""
    fx, fy, cx, cy = intrinsics
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    d = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], dim=-1)
    d = d / d.norm(dim=-1, keepdim=True)
    d = torch.einsum("hwj,fij->fhwi", d, c2w[:, :3, :3])
    o = c2w[:, None, None, :3, 3].expand_as(d)
    return torch.cat([torch.linalg.cross(o, d, dim=-1), d], dim=-1)


def pack_frames(rays: torch.Tensor) -> torch.Tensor:
    """[frames, H, W, 6] -> [1, 24, latent frames, H, W]: first frame four times, then four frames per group.

    Channel ``4 * c + k`` of a group is ray component c of its k-th frame.
    """
    rays = torch.cat([rays[:1].expand(4, -1, -1, -1), rays[1:]])
    frames, h, w, c = rays.shape
    if frames % 4:
        raise ValueError(f"camera embedding: length must be 1 + a multiple of 4, got {frames - 3}")
    groups = rays.reshape(frames // 4, 4, h, w, c).permute(4, 1, 0, 2, 3)
    return groups.reshape(1, c * 4, frames // 4, h, w).contiguous()


def camera_embedding(pose: str, width: int, height: int, length: int, speed: float = 1.0, fx: float = 0.5,
                     fy: float = 0.5, cx: float = 0.5, cy: float = 0.5) -> torch.Tensor:
    """The WAN_CAMERA_EMBEDDING of a preset: [1, 24, (length - 1) / 4 + 1, height, width], float32."""
    rays = plucker_rays(trajectory(pose, length, speed), width, height,
                        pixel_intrinsics(width, height, fx, fy, cx, cy))
    return pack_frames(rays).float()
