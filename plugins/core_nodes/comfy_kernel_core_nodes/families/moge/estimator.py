"""What a MOGE_MODEL socket carries: the loaded network and ``infer``, image -> camera-space geometry."""

from __future__ import annotations

import os

import torch

from . import geometry
from .model import MoGe2, detect, is_moge, moge_version

#: the token budget at resolution level 0 and 9 (MoGe-2's ``num_tokens_range``)
TOKENS = (1200, 3600)
MASK_THRESHOLD = 0.5


class MoGeEstimator:
    def __init__(self, path: str) -> None:
        from ...model.files import tensor_shapes
        from ...model.loading import UnsupportedModel
        from ...model.patcher import ModelPatcher
        from ...model.quant import network_weights
        from ...model.vae import VAEModel

        name = os.path.basename(path)
        shapes = tensor_shapes(path)
        if not is_moge(shapes):
            raise UnsupportedModel(f"{name}: not a MoGe model (no DINOv2 backbone under encoder.backbone)")
        version = moge_version(shapes)
        if version != 2:
            raise UnsupportedModel(f"{name}: MoGe-{version} is not supported here yet; MoGe-2 files are")
        try:
            layout = detect(shapes)
        except ValueError as e:
            raise UnsupportedModel(f"{name}: {e}") from None
        weights = network_weights(path, "", shapes, "MoGe", "text_encoder", lambda ops, compute: MoGe2(ops, layout),
                                  supported=(torch.float32,), rename=_rename)
        self.patcher = ModelPatcher(VAEModel(weights))
        self.has_normals = "normal_head" in layout.heads

    @torch.no_grad()
    def infer(self, image: torch.Tensor, resolution_level: int = 9, fov_x: float | None = None,
              force_projection: bool = True, apply_mask: bool = True) -> dict[str, torch.Tensor]:
        """``image`` [B, 3, H, W] in [0, 1] -> points, depth, intrinsics, mask (and normals), on the CPU.

        Depth and points are metric (the scale head's estimate); masked-out pixels
        are ``inf`` when ``apply_mask``. ``fov_x`` in degrees fixes the focal length.
        """
        lo, hi = TOKENS
        tokens = int(lo + resolution_level / 9 * (hi - lo))
        h, w = image.shape[-2:]
        aspect = w / h
        with self.patcher.use() as model:
            net = model.loaded_module
            device = next(net.parameters()).device
            out = {k: v.float() for k, v in net(image.to(device=device, dtype=torch.float32), tokens).items()}
        points, normal, scale = out["points"], out.get("normal"), out["metric_scale"]
        mask = out["mask"] > MASK_THRESHOLD

        if fov_x is None:
            focal, shift = geometry.recover_focal_shift(points, mask)
            bad = ~torch.isfinite(focal) | (focal <= 0)
            if bool(bad.any()):  # a flipped or lost focal length: take a 60 degree view, as ComfyUI does
                focal = torch.where(bad, torch.full_like(focal, geometry.focal_from_fov(60.0, aspect)), focal)
                _, shift = geometry.recover_focal_shift(points, mask, focal)
        else:
            focal = torch.full((points.shape[0],), geometry.focal_from_fov(fov_x, aspect), dtype=points.dtype,
                               device=points.device)
            _, shift = geometry.recover_focal_shift(points, mask, focal)
        shift = torch.nan_to_num(shift, nan=0.0)  # no shift fits: keep the predicted depths
        k = geometry.intrinsics(focal, aspect)
        points = torch.cat([points[..., :2], points[..., 2:] + shift[:, None, None, None]], dim=-1)
        mask = mask & (points[..., 2] > 0)
        depth = points[..., 2]
        if force_projection:
            points = geometry.depth_to_points(depth, k)
        points = points * scale[:, None, None, None]
        depth = depth * scale[:, None, None]
        if apply_mask:
            points = torch.where(mask[..., None], points, torch.full_like(points, float("inf")))
            depth = torch.where(mask, depth, torch.full_like(depth, float("inf")))
            if normal is not None:
                normal = torch.where(mask[..., None], normal, torch.zeros_like(normal))
        result = {"points": points, "depth": depth, "intrinsics": k, "mask": mask}
        if normal is not None:
            result["normal"] = normal
        return {key: value.cpu() for key, value in result.items()}


def _rename(key: str) -> str | None:
    """Drop what the network keeps as constants or never uses (the ImageNet statistics, DINOv2's mask token)."""
    if key in ("encoder.image_mean", "encoder.image_std", "encoder.backbone.mask_token"):
        return None
    return key


def load_moge(path: str) -> MoGeEstimator:
    return MoGeEstimator(path)
