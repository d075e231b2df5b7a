"""The SD KL autoencoder (8x, 4 latent channels) as a VAE, bare or inside a checkpoint."""

from __future__ import annotations

import torch

from ...components.kl_vae import AutoencoderKL
from ...model.base import WeightsSource
from ...model.detection import Shapes
from ...model.devices import storage_dtype
from ...model.files import file_identity, load_module, part_reader, part_size
from ...model.vae import VAE, VAEModel


def is_kl4(shapes: Shapes, prefix: str) -> bool:
    conv_in = shapes.get(prefix + "decoder.conv_in.weight")
    return conv_in is not None and conv_in[1] == 4 and prefix + "encoder.down.0.block.0.conv1.weight" in shapes


def _build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    with torch.device("meta"):
        model = AutoencoderKL()
    return load_module(model, sd, "VAE")


def kl_vae(path: str, prefix: str, shapes: Shapes) -> VAE:
    dtype = lambda: storage_dtype("vae")  # noqa: E731
    keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix))
    weights = WeightsSource(key=f"{file_identity(path)}#{prefix}#vae", read=part_reader(path, prefix, dtype),
                            build=_build, keys=keys, size=part_size(path, prefix, torch.float32), dtype=dtype)
    return VAE(first_stage_model=VAEModel(weights), latent_channels=4, downscale_ratio=8)
