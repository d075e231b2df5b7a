"""A mixed int8 / NVFP4 / bf16 diffusion model file through UNETLoader and KSampler, over the server's HTTP API.

The small Flux.1 of _flux.py is written in bf16 and again in ComfyUI's mixed
layout (every block matrix quantized: NVFP4, int8 with convrot, int8 per row,
by turns; the rest bf16). Both sample 2 steps from the same conditioning
(Load Conditioning, so no text encoder runs); the latents must agree within
the formats' error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from _flux import T5_WIDTH, flux_params, flux_state_dict  # noqa: E402
from _quant_files import quantize_layers  # noqa: E402
from _random_weights import write  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

BF16 = "flux1-dev.safetensors"
MIXED = "flux1-dev_int8_fp4_mixed.safetensors"
INT8 = "flux1-dev_int8_convrot.safetensors"
FORMATS = ({"format": "nvfp4"}, {"format": "int8", "convrot": 256}, {"format": "int8", "per_row": True})


def mixed_formats(sd: dict[str, torch.Tensor], formats: tuple[dict, ...] = FORMATS) -> dict[str, dict]:
    """Each 2-d block weight in turn in one of ``formats`` (int8 convrot only where 256 divides its input
    width, else int8 per row)."""
    layers = sorted(k[: -len(".weight")] for k, v in sd.items()
                    if k.endswith(".weight") and v.ndim == 2 and "_blocks." in k)
    out = {}
    for i, layer in enumerate(layers):
        spec = formats[i % len(formats)]
        if spec.get("convrot") and sd[f"{layer}.weight"].shape[1] % 256:
            spec = FORMATS[2]
        out[layer] = spec
    return out


@pytest.fixture(scope="module")
def server(graph_server):
    sd = flux_state_dict(flux_params(), seed=21, dtype=torch.bfloat16)
    write(graph_server.models_dir("diffusion_models") / BF16, sd)
    formats = mixed_formats(sd)
    assert {s["format"] for s in formats.values()} == {"nvfp4", "int8"} and len(formats) > 10
    write(graph_server.models_dir("diffusion_models") / MIXED, quantize_layers(sd, formats))
    int8 = mixed_formats(sd, FORMATS[1:])
    write(graph_server.models_dir("diffusion_models") / INT8, quantize_layers(sd, int8))
    g = torch.Generator().manual_seed(5)
    save_file({"conditioning": torch.randn(1, 7, T5_WIDTH, generator=g),
               "pooled_output": torch.randn(1, 768, generator=g)},
              str(graph_server.models_dir("embeddings") / "prompt.safetensors"))
    yield graph_server


def _sample(server, unet: str) -> np.ndarray:
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "cond": {"class_type": "ConditioningLoader", "inputs": {"conditioning_name": "prompt.safetensors"}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["cond", 0], "negative": ["cond", 0], "latent_image": ["latent", 0],
            "seed": 3, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "probe": {"class_type": "TestProbe", "inputs": {"value": ["sample", 0], "name": "latent"}},
    }
    return server.run(prompt, timeout=600)["latent"]["samples"]


@pytest.mark.timeout(900)
def test_quantized_files_sample_close_to_their_bf16_weights(server):
    """Relative error of the 2-step latent: about 5% with NVFP4 layers, well under 1% with int8 only."""
    reference = _sample(server, BF16)
    for name, tolerance in ((MIXED, 0.08), (INT8, 0.01)):
        latent = _sample(server, name)
        assert latent.shape == reference.shape == (1, 16, 8, 8) and np.isfinite(latent).all()
        error = float(np.linalg.norm(latent - reference) / np.linalg.norm(reference))
        assert 0 < error < tolerance, (name, error)
