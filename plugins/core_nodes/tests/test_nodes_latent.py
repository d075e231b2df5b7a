"""Latent nodes called directly: LatentUpscale against ComfyUI's hires capture, batching, compositing."""

from __future__ import annotations

import numpy as np
import torch

from comfy_kernel_core_nodes.nodes import latent as nodes


def test_latent_upscale_equals_comfyui_capture(reference_outputs):
    folder = reference_outputs / "hires_fix"
    samples = {"samples": torch.from_numpy(np.load(folder / "latent_KSampler_node5.npy"))}
    (out,) = nodes.LatentUpscale().upscale(samples, "bilinear", 96, 96, "disabled")
    expected = torch.from_numpy(np.load(folder / "latent_LatentUpscale_node8.npy"))
    assert out["samples"].shape == (1, 4, 12, 12)
    assert (out["samples"] - expected).abs().max() <= 1e-6


def test_upscale_sizes_and_methods():
    s = {"samples": torch.randn(1, 4, 8, 16)}
    assert nodes.LatentUpscale().upscale(s, "nearest-exact", 0, 0, "disabled")[0] is s
    assert nodes.LatentUpscale().upscale(s, "bilinear", 0, 32, "disabled")[0]["samples"].shape == (1, 4, 8, 16)
    assert nodes.LatentUpscale().upscale(s, "area", 256, 256, "center")[0]["samples"].shape == (1, 4, 32, 32)
    out = nodes.LatentUpscaleBy().upscale(s, "bislerp", 1.5)[0]["samples"]
    assert out.shape == (1, 4, 12, 24) and torch.isfinite(out).all()
    same = nodes.LatentUpscaleBy().upscale(s, "bislerp", 1.0)[0]["samples"]
    assert torch.allclose(same, s["samples"], atol=1e-5)


def test_empty_latent_and_batches():
    (empty,) = nodes.EmptyLatentImage().generate(64, 96, 3)
    assert empty["samples"].shape == (3, 4, 12, 8) and not empty["samples"].any()
    s = {"samples": torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 4, 2, 2).clone()}
    (part,) = nodes.LatentFromBatch().frombatch(s, 1, 2)
    assert part["batch_index"] == [1, 2] and part["samples"][:, 0, 0, 0].tolist() == [1.0, 2.0]
    (rep,) = nodes.RepeatLatentBatch().repeat(part, 2)
    assert rep["samples"].shape[0] == 4 and rep["batch_index"] == [1, 2, 3, 4]
    (masked,) = nodes.SetLatentNoiseMask().set_mask(s, torch.ones(2, 2))
    assert masked["noise_mask"].shape == (1, 1, 2, 2) and "noise_mask" not in s


def test_latent_composite_with_and_without_feather():
    to = {"samples": torch.zeros(1, 4, 8, 8)}
    src = {"samples": torch.ones(1, 4, 4, 4)}
    (hard,) = nodes.LatentComposite().composite(to, src, 16, 16, 0)
    assert hard["samples"][0, 0, 2:6, 2:6].eq(1).all() and hard["samples"].sum() == 64
    (soft,) = nodes.LatentComposite().composite(to, src, 16, 16, 16)
    assert soft["samples"][0, 0, 2, 2] == 0.25 and soft["samples"][0, 0, 3, 3] == 1.0
    assert not to["samples"].any()
