"""UNet and noise schedule against ComfyUI's captured model evaluations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _sd import predict_noise, sd15_sampling

from comfy_kernel_core_nodes.families.sd.unet import timestep_embedding

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _load(folder, name):
    return torch.from_numpy(np.load(folder / name))


def test_sigma_table():
    ms = sd15_sampling()
    table = ms.sigmas
    assert table.dtype == torch.float32 and table.shape == (1000,)
    assert float(ms.sigma_min) == pytest.approx(0.029167, rel=1e-5)
    assert float(ms.sigma_max) == pytest.approx(14.614642, rel=1e-6)
    assert torch.equal(ms.timestep(table).float(), torch.arange(1000).float())
    assert ms.timestep(torch.tensor([3.168605])).item() == 687
    assert ms.sigma(torch.tensor([999.0])).item() == pytest.approx(14.614642, rel=1e-6)
    mid = ms.sigma(torch.tensor([500.5])).item()
    assert table[500].item() < mid < table[501].item()


def test_normal_schedule_matches_captured_sigmas(reference_outputs):
    t = torch.linspace(999, 0, 4)
    sigmas = torch.cat([sd15_sampling().sigma(t), torch.zeros(1)])
    ref = _load(reference_outputs / "txt2img", "ksampler0_sigmas.npy")
    assert torch.allclose(sigmas, ref, rtol=1e-6, atol=0)


def test_timestep_embedding_is_cosines_first():
    emb = timestep_embedding(torch.tensor([0.0, 10.0]), 320)
    assert emb.shape == (2, 320)
    assert torch.equal(emb[0, :160], torch.ones(160)) and torch.equal(emb[0, 160:], torch.zeros(160))
    assert emb[1, 0].item() == pytest.approx(np.cos(10.0), abs=1e-6)


def test_derived_config(sd15_tiny_parts):
    from comfy_kernel_core_nodes.families.sd.detect import unet_config
    from comfy_kernel_core_nodes.families.sd.models import SD15

    cfg = unet_config({k: tuple(v.shape) for k, v in sd15_tiny_parts[0].items()})
    assert cfg["channel_mult"] == (1, 2) and cfg["num_res_blocks"] == (1, 1)
    assert cfg["transformer_depth"] == (1, 0) and cfg["transformer_depth_output"] == (1, 1, 0, 0)
    assert cfg["transformer_depth_middle"] == 1 and cfg["context_dim"] == 768
    assert SD15.matches(cfg) and SD15(cfg).unet_config["num_heads"] == 8


@pytest.mark.parametrize(
    ("workflow", "call"),
    [("txt2img", 0), ("txt2img_dpmpp_2m_karras", 0), ("img2img", 0), ("hires_fix", 1)],
)
def test_unet_matches_captured_evaluations(reference_outputs, sd15_tiny_unet, workflow, call):
    """Each evaluation is run as ComfyUI ran it: negative and positive in one batch.

    eps is compared where sigma is large enough for (x - denoised) / sigma to keep
    float32 precision (x reaches ~70 while the last sigma is 0.03); denoised at every step.
    """
    folder = reference_outputs / workflow
    xs, sigmas = _load(folder, f"ksampler{call}_step_x.npy"), _load(folder, f"ksampler{call}_step_sigma.npy")
    cond_ref = _load(folder, f"ksampler{call}_step_cond_denoised.npy")
    uncond_ref = _load(folder, f"ksampler{call}_step_uncond_denoised.npy")
    text = reference_outputs / "txt2img"
    context = torch.cat([_load(text, "cond_negative.npy"), _load(text, "cond_positive.npy")])
    for i in range(xs.shape[0]):
        x, sigma = torch.cat([xs[i], xs[i]]), torch.cat([sigmas[i], sigmas[i]])
        eps = predict_noise(sd15_tiny_unet, x, sigma, context)
        s = sigmas[i].view(-1, 1, 1, 1)
        for got_eps, den_ref in ((eps[1:], cond_ref[i]), (eps[:1], uncond_ref[i])):
            denoised = xs[i] - got_eps * s
            assert (denoised - den_ref).abs().max() / den_ref.abs().max() <= 1e-5
            if sigmas[i].item() > 0.1:
                eps_ref = (xs[i] - den_ref) / s
                assert (got_eps - eps_ref).abs().max() / eps_ref.abs().max() <= 1e-5


def test_odd_latent_sizes_keep_their_shape(sd15_tiny_unet):
    x = torch.randn(1, 4, 9, 7)
    eps = predict_noise(sd15_tiny_unet, x, torch.tensor([1.0]), torch.randn(1, 77, 768))
    assert eps.shape == x.shape and torch.isfinite(eps).all()
