"""Record ``reference.npz``: the tiny MoGe-2 of ``tests/_files_moge.py`` run through Microsoft's code.

Microsoft's MoGe is not on PyPI, so its outputs are recorded once and kept
here. With checkouts of github.com/microsoft/MoGe and
github.com/EasternJournalist/utils3d (MoGe's geometry helpers) and SciPy and
OpenCV importable:

    PYTHONPATH=MOGE:UTILS3D python plugins/core_nodes/tests/data/moge/record.py

Recorded: the shapes of the state dict; two 48x64 images; ``forward`` at 300
tokens; ``infer`` at resolution level 0 with the focal length recovered, and
with a 60 degree field of view without projection or mask (fp16 autocast
off), both with the network's points replaced by ``conditioned`` ones (random
weights predict points no camera fits); ``recover_focal_shift`` on a point map
made from a known camera.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))

from _files_moge import TINY, TINY_VIT, camera_points, conditioned, random_weights  # noqa: E402


def main() -> None:
    from moge.model.dinov2.models.vision_transformer import DinoVisionTransformer
    from moge.model.v2 import MoGeModel
    from moge.utils.geometry_torch import recover_focal_shift

    torch.manual_seed(0)
    model = MoGeModel(**TINY)
    model.encoder.backbone = DinoVisionTransformer(**TINY_VIT)
    model.encoder.output_projections = torch.nn.ModuleList(
        torch.nn.Conv2d(TINY_VIT["embed_dim"], TINY["encoder"]["dim_out"], 1) for _ in range(4))
    state = model.state_dict()
    shapes = {k: list(v.shape) for k, v in state.items()}
    weights = random_weights({k: tuple(v) for k, v in shapes.items()})
    missing = set(state) - set(weights)
    assert missing <= {"encoder.image_mean", "encoder.image_std"}, missing
    model.load_state_dict(weights, strict=False)
    model.eval()

    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 48, 64, generator=g)
    out: dict[str, np.ndarray] = {"shapes": np.array(json.dumps(shapes)), "image": image.numpy()}
    with torch.no_grad():
        raw = model.forward(image, num_tokens=300)
    for k, v in raw.items():
        out[f"forward_{k}"] = v.numpy()
    forward = model.forward

    def conditioned_forward(image: torch.Tensor, num_tokens: int) -> dict[str, torch.Tensor]:
        out = forward(image, num_tokens)
        return {**out, "points": conditioned(out["points"])}

    model.forward = conditioned_forward
    auto = model.infer(image, resolution_level=0, use_fp16=False)
    for k, v in auto.items():
        out[f"auto_{k}"] = v.numpy()
    fixed = model.infer(image, resolution_level=0, fov_x=60.0, force_projection=False, apply_mask=False,
                        use_fp16=False)
    for k, v in fixed.items():
        out[f"fov60_{k}"] = v.numpy()

    pts = camera_points(40, 56)
    focal, shift = recover_focal_shift(pts)
    out.update(synthetic_points=pts.numpy(), synthetic_focal=focal.numpy(), synthetic_shift=shift.numpy())
    _, shift = recover_focal_shift(pts, focal=torch.tensor([1.2]))
    out["synthetic_shift_at_1_2"] = shift.numpy()
    np.savez_compressed(HERE / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
