"""Wan ATI (motion tracks): WanTrackToVideo against ComfyUI 0.3.64's recorded outputs, its pieces against
hand-worked cases, and the ATI file (Wan 2.1 I2V's layout) detected and fed the node's channels.

No other implementation of the track drawing exists; ``data/wan_ati/reference.npz``
holds what ComfyUI's node computed on the inputs of ``_files_wan_ati.py``
(``data/wan_ati/record.py``). Measured on a CPU: equal, bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _files_wan_ati import NODE_CASES, StubVAE, ati_file, reference, start_images, tracks_json

from comfy_kernel_core_nodes.families.wan.nodes import WanImageToVideo
from comfy_kernel_core_nodes.families.wan.tracks import (
    WanTrackToVideo,
    parse_tracks,
    resample_tracks,
    track_motion,
    track_points,
)
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_diffusion_model, model_config

pytestmark = pytest.mark.usefixtures("single_torch_thread")

COND = [[torch.zeros(1, 3, 8), {}]]


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return reference()


def test_track_forms() -> None:
    point = {"x": 1, "y": 2}
    assert parse_tracks(json.dumps([point, point])) == [[[point, point]]]
    assert parse_tracks(json.dumps([[point], [point, point]])) == [[[point], [point, point]]]
    assert parse_tracks(json.dumps([[[point]], [[point]]])) == [[[point]], [[point]]]
    assert parse_tracks("[{'x': 1, 'y': 2}]") == [[[point]]]
    for unreadable in ("[]", "", "not json", "[1, 2]", '{"x": 1}', "[[]]"):
        assert parse_tracks(unreadable) == []


def test_tracks_are_padded_centred_and_stretched() -> None:
    points = track_points([{"x": i, "y": 2 * i} for i in range(130)])
    assert points.shape == (121, 3) and points[120, 0] == 120 and points[:, 2].all()
    short = track_points([{"x": 5, "y": 6}] * 3)
    assert short[:3, 2].all() and not short[3:].any()
    # a 100x50 frame: x from the centre in units of half the short edge (25 pixels); 4 frames after the
    # first take every 30th of the 120 later points, from the second of them
    out = resample_tracks(torch.stack([points]), 100, 50, 4)
    assert out.shape == (5, 1, 4)
    torch.testing.assert_close(out[:, 0, 1], (torch.tensor([0.0, 2, 32, 62, 92]) - 50) / 25)
    torch.testing.assert_close(out[:, 0, 2], (torch.tensor([0.0, 4, 64, 124, 184]) - 25) / 25)
    torch.testing.assert_close(out[:, 0, 0], torch.linspace(-1, 1, 121)[[0, 2, 32, 62, 92]])
    assert (out[:, 0, 3] == 1).all()
    # 80 frames (81 long, the template's): each point stretched over 2/3 frame, as ComfyUI repeats and strides
    expected = torch.repeat_interleave(torch.arange(1.0, 121), 2)[1::3]
    torch.testing.assert_close(resample_tracks(torch.stack([points]), 100, 50, 80)[1:, 0, 1], (expected - 50) / 25)
    # 120 frames: ComfyUI's stride runs one point short there; the last point completes it
    out = resample_tracks(torch.stack([points]), 100, 50, 120)
    torch.testing.assert_close(out[:, 0, 1], (torch.tensor([0.0, *range(2, 121), 120]) - 50) / 25)


def test_a_still_track_carries_the_start_features() -> None:
    """A track resting on a latent's centre moves the start frame's features there, weight ~1, in every frame."""
    g = torch.Generator().manual_seed(15)
    latents = torch.randn(16, 3, 4, 6, generator=g)
    xs, ys = torch.linspace(-1.5, 1.5, 6), torch.linspace(-1, 1, 4)
    track = torch.zeros(9, 1, 4)
    track[:, 0, 1:] = torch.tensor([float(xs[4]), float(ys[1]), 1.0])
    weights, blended = track_motion(track, latents, temperature=220.0, topk=2)
    assert (weights[0] == 1).all() and weights[1:, 1, 4].min() > 0.999
    assert weights[1:].sum() < 1.01 * 2
    torch.testing.assert_close(blended[:, 0], latents[:, 0])
    expected = torch.nn.functional.grid_sample(latents[None, :, 0], torch.tensor([[[[xs[4] / 1.5, ys[1]]]]]),
                                               align_corners=False)[0, :, 0, 0]
    torch.testing.assert_close(blended[:, 1:, 1, 4], expected[:, None].expand(16, 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(blended[:, 1:, 3, 0], latents[:, 1:, 3, 0])


@pytest.mark.parametrize("case", [*NODE_CASES, "empty"])
def test_node_matches_comfyui(ref: dict[str, np.ndarray], case: str) -> None:
    """single: one track; three: a short, a full and an over-long track in single quotes, 13 frames;
    batches: two batch items' tracks for a batch of three; empty: WanImageToVideo's conditioning."""
    tracks = dict(tracks_json(), empty="[]")[case]
    args = NODE_CASES.get(case, NODE_CASES["single"])
    clip = object()
    positive, negative, latent = WanTrackToVideo.execute(COND, COND, StubVAE(), tracks, start_image=start_images(),
                                                         clip_vision_output=clip, **args).result
    for key in ("concat_mask", "concat_latent_image"):
        np.testing.assert_allclose(positive[0][1][key].numpy(), ref[f"{case}_{key}"], rtol=1e-6, atol=1e-6)
        assert torch.equal(negative[0][1][key], positive[0][1][key])
    assert positive[0][1]["clip_vision_output"] is clip and negative[0][1]["clip_vision_output"] is clip
    assert list(latent["samples"].shape) == ref[f"{case}_latent_shape"].tolist()


def test_empty_tracks_are_image_to_video() -> None:
    args = NODE_CASES["single"]
    ours = WanTrackToVideo.execute(COND, COND, StubVAE(), "[]", start_image=start_images(), **args).result
    plain = WanImageToVideo.execute(COND, COND, StubVAE(), args["width"], args["height"], args["length"],
                                    args["batch_size"], start_image=start_images()).result
    for key in ("concat_mask", "concat_latent_image"):
        assert torch.equal(ours[0][0][1][key], plain[0][0][1][key])


def test_ati_file_takes_the_track_channels() -> None:
    """The ATI model is Wan 2.1 I2V (fp8 here, as Kijai's file): the drawn latents and their weights become its
    20 extra input channels (weights first, the latents scaled by the latent format)."""
    path = ati_file()
    found, _ = model_config(str(path))
    assert type(found).__name__ == "Wan21I2V" and found.unet_config["in_dim"] == 36
    patcher = load_diffusion_model(str(path))
    assert patcher.model.weights.keys == frozenset(tensor_shapes(str(path)))
    args = NODE_CASES["single"]
    positive, _, latent = WanTrackToVideo.execute(COND, COND, StubVAE(), tracks_json()["single"],
                                                  start_image=start_images(), **args).result
    options = positive[0][1]
    noise = torch.zeros_like(latent["samples"])
    concat = patcher.model.concat_cond(noise=noise, device=torch.device("cpu"), **options)
    assert concat.shape == (1, 20, *noise.shape[2:])
    torch.testing.assert_close(concat[:, :4], 1.0 - options["concat_mask"])
    torch.testing.assert_close(concat[:, 4:], patcher.model.process_latent_in(options["concat_latent_image"]))
    with patcher.use() as model:
        assert model.diffusion_model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
