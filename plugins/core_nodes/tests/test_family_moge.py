"""MoGe-2 against outputs recorded from Microsoft's code (``_files_moge.py``, ``data/moge/record.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _files_moge import conditioned, random_weights, reference, shapes, write_file

from comfy_kernel_core_nodes.families.moge import geometry
from comfy_kernel_core_nodes.families.moge.estimator import MoGeEstimator
from comfy_kernel_core_nodes.families.moge.model import MoGe2, detect
from comfy_kernel_core_nodes.model import ops
from comfy_kernel_core_nodes.model.loading import UnsupportedModel


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return reference()


@pytest.fixture(scope="module")
def network() -> MoGe2:
    net = MoGe2(ops.plain, detect(shapes()))
    sd = random_weights(shapes())
    del sd["encoder.backbone.mask_token"]
    net.load_state_dict(sd, strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_file(tmp_path_factory.mktemp("moge") / "moge_2_vitl_normal_fp16.safetensors")


def test_layout_read_from_shapes_builds_every_tensor_of_the_file() -> None:
    layout = detect(shapes())
    assert (layout.width, layout.depth, layout.grid, layout.taps) == (128, 4, 8, (0, 1, 2, 3))
    assert layout.neck.blocks == (0, 1, 1, 1, 0) and layout.neck.dim_out == (None,) * 5
    assert layout.heads["mask_head"].in_norm and not layout.heads["points_head"].in_norm
    assert layout.neck.resamplers == ("conv_transpose",) * 3 + ("bilinear",)
    ours = {k: tuple(v.shape) for k, v in MoGe2(ops.plain, layout).state_dict().items()}
    dropped = {"encoder.image_mean", "encoder.image_std", "encoder.backbone.mask_token"}
    assert ours == {k: v for k, v in shapes().items() if k not in dropped}


def test_forward_matches_moge(network: MoGe2, ref: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        out = network(torch.from_numpy(ref["image"]), 300)
    for key in ("points", "normal", "mask", "metric_scale"):
        np.testing.assert_allclose(out[key].numpy(), ref[f"forward_{key}"], rtol=5e-4, atol=5e-5, err_msg=key)


def test_square_image_uses_the_stored_position_grid_unscaled(network: MoGe2) -> None:
    """DINOv2 skips the position interpolation when the grid already fits; resampling it would move every value."""
    backbone = network.encoder.backbone
    assert torch.equal(backbone.positions(8, 8, torch.float32), backbone.pos_embed)
    assert not torch.allclose(backbone.positions(8, 9, torch.float32)[:, :9], backbone.pos_embed[:, :9])


@pytest.fixture
def camera_like(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network's points replaced by a map a camera fits, as the reference was recorded."""
    forward = MoGe2.forward

    def conditioned_forward(self: MoGe2, image: torch.Tensor, tokens: int) -> dict[str, torch.Tensor]:
        out = forward(self, image, tokens)
        return {**out, "points": conditioned(out["points"])}

    monkeypatch.setattr(MoGe2, "forward", conditioned_forward)


def test_infer_recovers_the_camera_as_moge_does(model_file: Path, ref: dict[str, np.ndarray],
                                                camera_like: None) -> None:
    estimator = MoGeEstimator(str(model_file))
    image = torch.from_numpy(ref["image"])
    auto = estimator.infer(image, resolution_level=0)
    np.testing.assert_array_equal(auto["mask"].numpy(), ref["auto_mask"])
    np.testing.assert_allclose(auto["intrinsics"].numpy(), ref["auto_intrinsics"], rtol=1e-4)
    for key in ("points", "depth", "normal"):  # inf where masked out, in both
        np.testing.assert_allclose(auto[key].numpy(), ref[f"auto_{key}"], rtol=2e-4, atol=2e-5, err_msg=key)

    fixed = estimator.infer(image, resolution_level=0, fov_x=60.0, force_projection=False, apply_mask=False)
    np.testing.assert_allclose(fixed["intrinsics"].numpy(), ref["fov60_intrinsics"], rtol=1e-6)
    for key in ("points", "depth", "normal"):
        np.testing.assert_allclose(fixed[key].numpy(), ref[f"fov60_{key}"], rtol=2e-4, atol=2e-5, err_msg=key)
    assert np.isfinite(fixed["depth"].numpy()).all()
    np.testing.assert_array_equal(fixed["mask"].numpy(), ref["fov60_mask"])


def test_focal_and_shift_of_a_known_camera(ref: dict[str, np.ndarray]) -> None:
    points = torch.from_numpy(ref["synthetic_points"])
    focal, shift = geometry.recover_focal_shift(points, None)
    assert focal.item() == pytest.approx(1.4, rel=1e-4) and shift.item() == pytest.approx(2.0, rel=1e-4)
    np.testing.assert_allclose(focal.numpy(), ref["synthetic_focal"], rtol=1e-3)
    _, shift = geometry.recover_focal_shift(points, None, torch.tensor([1.2]))
    np.testing.assert_allclose(shift.numpy(), ref["synthetic_shift_at_1_2"], rtol=1e-3)


def test_a_map_no_camera_fits_falls_back_to_a_60_degree_view(model_file: Path, ref: dict[str, np.ndarray]) -> None:
    """The random network's own points: the error falls forever as the shift grows (SciPy stops at its
    tolerance wherever that happens to be); a finite 60 degree camera is kept instead."""
    out = MoGeEstimator(str(model_file)).infer(torch.from_numpy(ref["image"]), resolution_level=0)
    k = geometry.intrinsics(torch.tensor([geometry.focal_from_fov(60.0, 64 / 48)]), 64 / 48)
    torch.testing.assert_close(out["intrinsics"], k.expand(2, 3, 3))
    assert torch.isfinite(out["depth"][out["mask"]]).all() and out["mask"].any()


def test_too_few_valid_pixels_give_a_neutral_camera() -> None:
    points = torch.rand(1, 16, 16, 3) + 1
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    focal, shift = geometry.recover_focal_shift(points, mask)
    assert (focal.item(), shift.item()) == (1.0, 0.0)


def test_depth_re_projects_through_the_intrinsics() -> None:
    k = geometry.intrinsics(torch.tensor([1.0]), aspect=2.0)
    depth = torch.full((1, 4, 8), 2.0)
    pts = geometry.depth_to_points(depth, k)
    # back through the camera: every point lands on its own pixel centre
    u = pts[..., 0] / pts[..., 2] * k[0, 0, 0] + 0.5
    v = pts[..., 1] / pts[..., 2] * k[0, 1, 1] + 0.5
    assert torch.allclose(u[0, 0], (torch.arange(8) + 0.5) / 8)
    assert torch.allclose(v[0, :, 0], (torch.arange(4) + 0.5) / 4)


def test_other_files_are_refused_by_name(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "not_moge.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(UnsupportedModel, match="not a MoGe model"):
        MoGeEstimator(str(path))
    v3 = tmp_path / "moge3.safetensors"
    save_file({"encoder.backbone.pos_embed": torch.zeros(1, 5, 4), "refiner.encoder_fuse.weight": torch.zeros(2)},
              str(v3))
    with pytest.raises(UnsupportedModel, match="MoGe-3 is not supported"):
        MoGeEstimator(str(v3))
