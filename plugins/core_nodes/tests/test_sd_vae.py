"""VAE decode/encode against ComfyUI's captured images and latents, and the tiled variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _sd import vae_of

from comfy_kernel_core_nodes.model.vae import tiled_map

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _load(folder, name):
    return torch.from_numpy(np.load(folder / name))


def test_decode_matches_reference(reference_outputs, sd15_tiny_vae):
    folder = reference_outputs / "txt2img"
    image = vae_of(sd15_tiny_vae).decode(_load(folder, "latent_KSampler_node5.npy"))
    ref = _load(folder, "image.npy")
    assert image.shape == ref.shape == (1, 64, 64, 3)
    assert (image - ref).abs().max() <= 1e-4


def test_encode_matches_reference(reference_outputs, sd15_tiny_vae):
    folder = reference_outputs / "img2img"
    latent = vae_of(sd15_tiny_vae).encode(_load(folder, "input_image.npy"))
    ref = _load(folder, "latent_VAEEncode_node9.npy")
    assert latent.shape == ref.shape == (1, 4, 8, 8)
    assert (latent - ref).abs().max() / ref.abs().max() <= 1e-5


def test_crop_to_multiple_is_centred():
    pixels = torch.arange(13 * 10, dtype=torch.float32).reshape(1, 13, 10, 1)
    cropped = vae_of(torch.nn.Identity()).crop(pixels)
    assert cropped.shape == (1, 8, 8, 1)
    assert torch.equal(cropped, pixels[:, 2:10, 1:9])


def test_tiled_map_blends_to_the_untiled_result():
    x = torch.randn(1, 4, 20, 28)
    up = lambda t: F.interpolate(t, scale_factor=8.0, mode="nearest")  # noqa: E731
    out = tiled_map(x, up, (8, 12), 4, 8, 4)
    assert torch.allclose(out, up(x), atol=1e-6)
    pixels = torch.randn(1, 3, 96, 64)
    down = lambda t: F.avg_pool2d(t, 8)  # noqa: E731
    assert torch.allclose(tiled_map(pixels, down, (48, 32), 16, 1 / 8, 3), down(pixels), atol=1e-6)


def test_tiled_decode_and_encode(reference_outputs, sd15_tiny_vae):
    latent = _load(reference_outputs / "txt2img", "latent_KSampler_node5.npy")
    vae = vae_of(sd15_tiny_vae)
    plain = vae.decode(latent)
    assert (vae.decode_tiled(latent, tile_x=64, tile_y=64, overlap=8) - plain).abs().max() <= 1e-5
    tiled = vae.decode_tiled(latent, tile_x=6, tile_y=6, overlap=1)
    assert tiled.shape == plain.shape == (1, 64, 64, 3)
    assert torch.isfinite(tiled).all() and 0 <= tiled.min() and tiled.max() <= 1
    assert (tiled - plain).abs().mean() < 0.1
    z = vae.encode(plain)
    assert (vae.encode_tiled(plain, tile_x=512, tile_y=512, overlap=64) - z).abs().max() / z.abs().max() <= 1e-5
