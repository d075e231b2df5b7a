"""The 16-channel KL autoencoder (SD3's and Flux.1's VAE) as a VAE file or a checkpoint's VAE part."""

from __future__ import annotations

import torch

from ..model.base import WeightsSource
from ..model.detection import Shapes
from ..model.devices import storage_dtype
from ..model.files import file_identity, load_module, part_reader, part_size
from ..model.vae import VAE, VAEModel
from .kl_vae import AutoencoderKL


def is_kl16(shapes: Shapes, prefix: str) -> bool:
    conv_in = shapes.get(prefix + "decoder.conv_in.weight")
    return conv_in is not None and conv_in[1] == 16 and prefix + "encoder.down.0.block.0.conv1.weight" in shapes


def kl16_vae(path: str, prefix: str, shapes: Shapes) -> VAE:
    quant = prefix + "quant_conv.weight" in shapes
    dtype = lambda: storage_dtype("vae")  # noqa: E731

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        with torch.device("meta"):
            model = AutoencoderKL(latent_channels=16, use_quant_conv=quant)
        return load_module(model, sd, "VAE")

    keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix))
    weights = WeightsSource(key=f"{file_identity(path)}#{prefix}#vae16", read=part_reader(path, prefix, dtype),
                            build=build, keys=keys, size=part_size(path, prefix, torch.float32), dtype=dtype)
    return VAE(first_stage_model=VAEModel(weights), latent_channels=16, downscale_ratio=8)
