"""The same models on a CUDA device (skipped where there is none), fp32 without TF32."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _sd import predict_noise, vae_of

from comfy_kernel_core_nodes.components.clip.text_model import encode_prompt

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def exact_cuda():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_models_on_cuda(reference_outputs, sd15_tiny_clip, sd15_tiny_unet, sd15_tiny_vae, exact_cuda):
    folder = reference_outputs / "txt2img"
    load = lambda name: torch.from_numpy(np.load(folder / name))  # noqa: E731

    cond, _ = encode_prompt(copy.deepcopy(sd15_tiny_clip).to(exact_cuda), "a photo of a cat")
    assert (cond - load("cond_positive.npy")).abs().max() <= 1e-4

    unet = copy.deepcopy(sd15_tiny_unet).to(exact_cuda)
    x, sigma = load("ksampler0_step_x.npy")[0].to(exact_cuda), load("ksampler0_step_sigma.npy")[0].to(exact_cuda)
    eps = predict_noise(unet, x, sigma, load("cond_positive.npy"))
    eps_ref = (load("ksampler0_step_x.npy")[0] - load("ksampler0_step_cond_denoised.npy")[0]) / sigma.cpu().view(-1, 1, 1, 1)
    assert eps.device.type == "cuda"
    assert (eps.cpu() - eps_ref).abs().max() / eps_ref.abs().max() <= 1e-4

    image = vae_of(copy.deepcopy(sd15_tiny_vae).to(exact_cuda)).decode(load("latent_KSampler_node5.npy").to(exact_cuda))
    assert (image.cpu() - load("image.npy")).abs().max() <= 1e-4
