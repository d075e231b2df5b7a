"""Every checkpoint layout the shared generator knows is derived and built with exactly its keys and shapes.

Only shapes are needed, so the models are built on the meta device: the full-size
SD1.5 layout is checked without writing its 2 GB file.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from comfy_kernel_core_nodes.sd.checkpoint import derive_unet_config, detect_model_type, split_state_dict
from comfy_kernel_core_nodes.sd.clip_text import CLIPTextModel
from comfy_kernel_core_nodes.sd.unet import UNetModel
from comfy_kernel_core_nodes.sd.vae import AutoencoderKL

EXPECTED = {
    "min": ((1,), (1,), (1,), None),
    "tiny": ((1, 2), (1, 1), (1, 0), 1),
    "sd15": ((1, 2, 4, 4), (2, 2, 2, 2), (1, 1, 1, 0), 1),
}


@pytest.fixture(scope="module")
def generator(reference_outputs):
    path = reference_outputs.parent / "make_checkpoint.py"
    spec = importlib.util.spec_from_file_location("make_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_layout_round_trip(generator, preset):
    items = generator.build_spec(preset).items
    sd = {key: torch.empty(shape, device="meta") for key, shape, _ in items}
    unet_sd, vae_sd, clip_sd = split_state_dict(sd)

    cfg = derive_unet_config(unet_sd)
    mult, res, depth, middle = EXPECTED[preset]
    assert cfg.channel_mult == mult and cfg.num_res_blocks == res
    per_block = tuple(d for d, n in zip(depth, res, strict=True) for _ in range(n))
    assert cfg.transformer_depth == per_block
    assert cfg.transformer_depth_middle == middle
    assert detect_model_type(cfg) == "sd15"

    with torch.device("meta"):
        models = (UNetModel(cfg), AutoencoderKL(), CLIPTextModel())
    for model, part in zip(models, (unet_sd, vae_sd, clip_sd), strict=True):
        assert _shapes(model) == {k: tuple(v.shape) for k, v in part.items()}
