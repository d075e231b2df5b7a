"""Wan's Fun camera-control models: the Plücker camera embedding, detection, the control adapter.

The embedding is checked against rays worked out by hand for poses whose
effect is known (a quarter turn about the view axis, a sideways pan, a zoom);
the models against random-weight files in the released key layout.
"""

from __future__ import annotations

import math

import pytest
import torch
from _files_wan import transformer_file
from _oracle import randomize

from comfy_kernel_core_nodes.families.wan.camera import camera_embedding, pixel_intrinsics, trajectory
from comfy_kernel_core_nodes.families.wan.models import transformer_layout
from comfy_kernel_core_nodes.families.wan.transformer import WanConfig, WanTransformer
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_diffusion_model, model_config

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SMALL = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64)
#: the pose files' frame: the models were trained on 16:9 trajectories
POSE_RATIO = 1280 / 720


def ray(embedding: torch.Tensor, frame: int, y: int, x: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(moment, direction) of pixel (y, x) in video frame ``frame`` of a packed [1, 24, T, H, W] embedding."""
    group, k = divmod(frame + 3, 4) if frame else (0, 0)
    values = embedding[0, [4 * c + k for c in range(6)], group, y, x]
    return values[:3].double(), values[3:].double()


def unit(*v: float) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.norm()


def test_quarter_turn_about_the_view_axis_carries_x_rays_to_y():
    """ClockWise at speed 2.5 over 5 frames turns 2.5 * 3/5 * 60 = 90 degrees by frame 3."""
    size = 33  # odd: pixel 16's centre is the principal point
    emb = camera_embedding("ClockWise (CW)", size, size, 5, speed=2.5)
    assert emb.shape == (1, 24, 2, size, size) and emb.dtype == torch.float32
    # a square frame is narrower than 16:9, so the horizontal focal length grows by 16/9
    a = 1 / (size * POSE_RATIO * 0.5)
    b = 1 / (size * 0.5)
    moment, direction = ray(emb, 0, 16, 17)
    torch.testing.assert_close(direction, unit(a, 0, 1), atol=1e-6, rtol=0)
    assert moment.abs().max() < 1e-7  # the camera sits at the origin
    moment, direction = ray(emb, 3, 16, 17)
    torch.testing.assert_close(direction, unit(0, a, 1), atol=1e-6, rtol=0)
    moment, direction = ray(emb, 3, 15, 16)  # one pixel up: -y turns to +x
    torch.testing.assert_close(direction, unit(b, 0, 1), atol=1e-6, rtol=0)
    assert moment.abs().max() < 1e-7


def test_pan_and_zoom_move_the_origin_and_give_moments():
    """Pan Right moves by 1.5 * speed * i / n along x; Zoom In by 3 * speed * i / n along z; directions stay."""
    w, h, n = 48, 16, 9  # wider than 16:9: the vertical focal length grows instead
    fx, fy = 48 * 0.5, 48 / POSE_RATIO * 0.5
    assert pixel_intrinsics(w, h, 0.5, 0.5, 0.5, 0.5) == pytest.approx((fx, fy, 24, 8))
    d = unit((5.5 - 24) / fx, (12.5 - 8) / fy, 1)
    for pose, origin in (("Pan Right", lambda t: (1.5 * t, 0, 0)), ("Zoom In", lambda t: (0, 0, 3 * t))):
        emb = camera_embedding(pose, w, h, n, speed=1.2)
        for frame in (0, 4, 7):
            o = torch.tensor(origin(1.2 * frame / n), dtype=torch.float64)
            moment, direction = ray(emb, frame, 12, 5)
            torch.testing.assert_close(direction, d, atol=1e-6, rtol=0)
            torch.testing.assert_close(moment, torch.linalg.cross(o, d), atol=1e-6, rtol=0)


def test_packing_repeats_the_first_frame_and_groups_four_frames():
    emb = camera_embedding("Pan Up", 32, 32, 81, speed=1.0, fx=0.4, fy=0.6, cx=0.3, cy=0.7)
    assert emb.shape == (1, 24, 21, 32, 32)
    first = emb[0, :, 0].view(6, 4, 32, 32)
    assert torch.equal(first, first[:, :1].expand(-1, 4, -1, -1))
    assert not torch.allclose(emb[0, 0::4, 20], emb[0, 3::4, 20])  # frames of a group differ
    # the ray grid follows cx, cy: the direction is (0, 0, 1) only at the principal point
    d = emb[0, 20:24, 0].mean(0)  # z direction of frame 0
    y, x = divmod(int(d.argmax()), 32)
    assert (x, y) == (9, 22)
    torch.testing.assert_close(trajectory("Static", 3), torch.eye(4, dtype=torch.float64).expand(3, 4, 4))
    with pytest.raises(ValueError, match="length"):
        camera_embedding("Static", 32, 32, 6)


@pytest.mark.parametrize("kind, config, model_type, in_dim", [
    ("camera21", "Wan21Camera", "camera", 32), ("camera22", "Wan22Camera", "camera_2.2", 36)])
def test_fun_camera_files_are_detected_with_every_key(kind, config, model_type, in_dim):
    path = transformer_file(kind)
    shapes = tensor_shapes(str(path))
    assert shapes["control_adapter.conv.weight"] == (256, 24 * 64, 2, 2)
    assert "control_adapter.residual_blocks.0.conv2.bias" in shapes
    assert ("img_emb.proj.0.bias" in shapes) == (kind == "camera21")
    found, prefix = model_config(str(path))
    assert type(found).__name__ == config and prefix == ""
    assert (found.unet_config["model_type"], found.unet_config["in_dim"],
            found.unet_config["in_dim_control_adapter"]) == (model_type, in_dim, 24)
    with torch.device("meta"):
        expected = set(WanTransformer(transformer_layout(found.unet_config)).state_dict())
    assert set(shapes) == expected
    patcher = load_diffusion_model(str(path))
    assert patcher.model.weights.keys == frozenset(expected)
    assert type(patcher.model).__name__ == "WanCameraModel"


def _camera_net(image: bool = False) -> WanTransformer:
    cfg = WanConfig(model_type="camera" if image else "camera_2.2", in_dim=32 if image else 36,
                    image_embedding=image, in_dim_control_adapter=24, **SMALL)
    net = WanTransformer(cfg).eval()
    randomize(net)
    return net


def test_camera_input_changes_the_output_and_a_zero_adapter_does_not():
    net = _camera_net()
    torch.manual_seed(0)
    x, t, context = torch.randn(1, 36, 2, 4, 6), torch.tensor([500.0]), torch.randn(1, 5, 64)
    zoom = camera_embedding("Zoom In", 48, 32, 5)
    pan = camera_embedding("Pan Left", 48, 32, 5)
    with torch.no_grad():
        plain = net(x, t, context)
        zoomed = net(x, t, context, camera_conditions=zoom)
        panned = net(x, t, context, camera_conditions=pan)
    assert plain.shape == zoomed.shape == (1, 16, 2, 4, 6)
    assert not torch.allclose(plain, zoomed, atol=1e-3)
    assert not torch.allclose(zoomed, panned, atol=1e-3)
    with torch.no_grad():
        for p in net.control_adapter.parameters():
            p.zero_()
        torch.testing.assert_close(net(x, t, context, camera_conditions=zoom), plain)


def test_adapter_is_pixel_blocks_then_patch_convolution_then_residual():
    """The adapter on one frame, worked out with plain tensor ops: 8x8 pixel blocks (channel-major), a 2x2
    stride-2 convolution, then conv-relu-conv added back."""
    import torch.nn.functional as F

    adapter = _camera_net().control_adapter
    emb = torch.randn(1, 24, 2, 32, 48)
    with torch.no_grad():
        out = adapter(emb)
        blocks = emb[0, :, 1].view(24, 4, 8, 6, 8).permute(0, 2, 4, 1, 3).reshape(24 * 64, 4, 6)
        patches = blocks.view(24 * 64, 2, 2, 3, 2).permute(1, 3, 0, 2, 4)  # [row, column, channel, ky, kx]
        y = torch.einsum("ocyx,ijcyx->oij", adapter.conv.weight, patches) + adapter.conv.bias[:, None, None]
        block = adapter.residual_blocks[0]
        hidden = F.relu(F.conv2d(y[None], block.conv1.weight, block.conv1.bias, padding=1))
        expected = y + F.conv2d(hidden, block.conv2.weight, block.conv2.bias, padding=1)[0]
    assert out.shape == (1, 256, 2, 2, 3)
    torch.testing.assert_close(out[0, :, 1], expected, rtol=1e-4, atol=1e-4)


def test_wan21_camera_uses_clip_vision_tokens():
    net = _camera_net(image=True)
    torch.manual_seed(1)
    x, t, context = torch.randn(1, 32, 2, 4, 6), torch.tensor([300.0]), torch.randn(1, 5, 64)
    cam = camera_embedding("Pan Down", 48, 32, 5)
    with torch.no_grad():
        without = net(x, t, context, camera_conditions=cam)
        with_clip = net(x, t, context, clip_fea=torch.randn(1, 257, 1280), camera_conditions=cam)
    assert hasattr(net.blocks[0].cross_attn, "k_img") and hasattr(net, "img_emb")
    assert not torch.allclose(without, with_clip, atol=1e-3)
    assert math.isfinite(float(with_clip.abs().max()))


def test_camera_model_hands_the_embedding_to_its_adapter():
    """WAN22_Camera from a file: ``camera_conditions`` becomes a model input and changes the prediction."""
    patcher = load_diffusion_model(str(transformer_file("camera22")))
    torch.manual_seed(2)
    noise, text = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 5, 128)
    emb = camera_embedding("Pan Right", 32, 32, 5)
    conds = patcher.model.extra_conds(noise=noise, device="cpu", cross_attn=text, camera_conditions=emb)
    assert torch.equal(conds["camera_conditions"].cond, emb)
    assert conds["c_concat"].cond.shape == (1, 20, 2, 4, 4)  # mask and start-image channels (zeros here)
    sigma = torch.tensor([0.7])
    with patcher.use() as model, torch.no_grad():
        plain = model.apply_model(noise, sigma, c_concat=conds["c_concat"].cond, c_crossattn=text)
        moved = model.apply_model(noise, sigma, c_concat=conds["c_concat"].cond, c_crossattn=text,
                                  camera_conditions=conds["camera_conditions"].cond)
    assert plain.shape == moved.shape == noise.shape
    assert not torch.allclose(plain, moved, atol=1e-3)
