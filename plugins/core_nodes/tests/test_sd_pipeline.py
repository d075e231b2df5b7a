"""The SD pieces composed into the txt2img workflow, with a minimal Euler loop, against ComfyUI's result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _sd import denoise, sd15_sampling, vae_of

from comfy_kernel_core_nodes.components.clip.text_model import encode_prompt

pytestmark = pytest.mark.usefixtures("single_torch_thread")

LATENT_SCALE = 0.18215


def test_txt2img_end_to_end(reference_outputs, sd15_tiny_clip, sd15_tiny_unet, sd15_tiny_vae):
    folder = reference_outputs / "txt2img"
    positive, _ = encode_prompt(sd15_tiny_clip, "a photo of a cat")
    negative, _ = encode_prompt(sd15_tiny_clip, "blurry")
    context = torch.cat([negative, positive])

    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(42))
    assert torch.equal(noise, torch.from_numpy(np.load(folder / "ksampler0_noise.npy")))
    sigmas = torch.cat([sd15_sampling().sigma(torch.linspace(999, 0, 4)), torch.zeros(1)])

    x = noise * (1 + sigmas[0] ** 2) ** 0.5
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        uncond, cond = denoise(sd15_tiny_unet, torch.cat([x, x]), sigma.repeat(2), context).chunk(2)
        denoised = uncond + (cond - uncond) * 7.0
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    latent = x / LATENT_SCALE

    latent_ref = torch.from_numpy(np.load(folder / "latent_KSampler_node5.npy"))
    assert (latent - latent_ref).abs().max() / latent_ref.abs().max() <= 1e-4
    image = vae_of(sd15_tiny_vae).decode(latent)
    assert (image - torch.from_numpy(np.load(folder / "image.npy"))).abs().max() <= 1e-4
