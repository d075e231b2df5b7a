"""The shared resize: what core nodes and ComfyUI-style packs get from common_upscale."""

import pytest

torch = pytest.importorskip("torch")

from comfy_kernel.nodes.resize import bislerp, common_upscale, lanczos  # noqa: E402


def test_bilinear_is_torch_interpolate_without_antialias():
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    out = common_upscale(x, 12, 8, "bilinear", "disabled")
    plain = torch.nn.functional.interpolate(x, size=(8, 12), mode="bilinear")
    smooth = torch.nn.functional.interpolate(x, size=(8, 12), mode="bilinear", antialias=True)
    assert torch.equal(out, plain)
    assert not torch.allclose(out, smooth)


def test_center_crop_keeps_the_middle_at_the_target_aspect():
    x = torch.arange(4 * 8, dtype=torch.float32).view(1, 1, 4, 8)
    out = common_upscale(x, 4, 4, "nearest-exact", "center")
    assert torch.equal(out, x[..., :, 2:6])


def test_bislerp_keeps_vector_norms_between_neighbours():
    x = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    out = bislerp(x, 12, 12)
    assert out.shape == (1, 4, 12, 12)
    norms_in, norms_out = x.norm(dim=1), out.norm(dim=1)
    assert norms_out.min() >= norms_in.min() - 1e-5
    assert norms_out.max() <= norms_in.max() + 1e-5
    assert torch.allclose(bislerp(x, 6, 6), x, atol=1e-5)


def test_lanczos_resizes_images_in_nchw():
    x = torch.rand(2, 3, 16, 16)
    out = lanczos(x, 8, 4)
    assert out.shape == (2, 3, 4, 8)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_video_batches_keep_their_frame_count():
    x = torch.rand(1, 4, 5, 8, 8)
    assert common_upscale(x, 16, 12, "bilinear", "disabled").shape == (1, 4, 5, 12, 16)
