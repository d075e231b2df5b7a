"""Every checkpoint layout the checkpoint generator (tests/data) knows is derived and built with exactly its keys and shapes.

Only shapes are needed, so the models are built on the meta device: the full-size
SD1.5 layout is checked without writing its 2 GB file.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from comfy_kernel_core_nodes.components.clip.text_model import CLIPTextModel
from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL
from comfy_kernel_core_nodes.families.sd.models import unet_layout
from comfy_kernel_core_nodes.families.sd.unet import UNetModel
from comfy_kernel_core_nodes.model import detection

EXPECTED = {
    "min": ((1,), (1,), (1,), None),
    "tiny": ((1, 2), (1, 1), (1, 0), 1),
    "sd15": ((1, 2, 4, 4), (2, 2, 2, 2), (1, 1, 1, 0), 1),
}


@pytest.fixture(scope="module")
def generator(checkpoint_generator):
    path = checkpoint_generator
    spec = importlib.util.spec_from_file_location("make_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_layout_round_trip(generator, preset):
    shapes = {key: tuple(shape) for key, shape, _ in generator.build_spec(preset).items}
    part = lambda p: {k[len(p):]: v for k, v in shapes.items() if k.startswith(p)}  # noqa: E731
    unet_sd, vae_sd = part("model.diffusion_model."), part("first_stage_model.")
    clip_sd = {k: v for k, v in part("cond_stage_model.transformer.text_model.").items()
               if not k.endswith("position_ids")}

    config = detection.model_config_from(shapes, "model.diffusion_model.")
    assert config.family == "sd15"
    cfg = unet_layout(config.unet_config)
    mult, res, depth, middle = EXPECTED[preset]
    assert cfg.channel_mult == mult and cfg.num_res_blocks == res
    per_block = tuple(d for d, n in zip(depth, res, strict=True) for _ in range(n))
    assert cfg.transformer_depth == per_block
    assert cfg.transformer_depth_middle == middle

    with torch.device("meta"):
        models = (UNetModel(cfg), AutoencoderKL(), CLIPTextModel())
    for model, expected in zip(models, (unet_sd, vae_sd, clip_sd), strict=True):
        assert _shapes(model) == expected
