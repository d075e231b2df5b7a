"""Flux.2's autoencoder: the KL autoencoder with 32 latent channels, then 2x2 patches normalised per channel.

The sampler's latent is 128 channels at 1/16 of the image: the 32-channel
posterior mean in 2x2 patches (channel-major: c, row, column), normalised by
the running mean and variance of the file's ``bn`` (a BatchNorm without
affine terms, eps 1e-4). Decoding inverts both steps.
"""

from __future__ import annotations

import torch
from torch import nn

from ...components.kl_vae import AutoencoderKL
from ...model.base import WeightsSource
from ...model.detection import Shapes
from ...model.devices import storage_dtype
from ...model.files import file_identity, load_module, part_reader, part_size
from ...model.vae import VAE, VAEModel

LATENT_CHANNELS = 32
PATCH = 2
EPS = 1e-4


def patchify(z: torch.Tensor) -> torch.Tensor:
    b, c, h, w = z.shape
    return z.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 1, 3, 5, 2, 4).reshape(
        b, c * PATCH * PATCH, h // PATCH, w // PATCH)


def unpatchify(z: torch.Tensor) -> torch.Tensor:
    b, c, h, w = z.shape
    c //= PATCH * PATCH
    return z.reshape(b, c, PATCH, PATCH, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * PATCH, w * PATCH)


class RunningStats(nn.Module):
    """The ``bn`` entry of the file: per-channel running mean and variance of the patched latents."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))


class Flux2Autoencoder(AutoencoderKL):
    def __init__(self, decoder_widths: tuple[int, ...] | None = None) -> None:
        super().__init__(latent_channels=LATENT_CHANNELS, use_quant_conv=True, decoder_widths=decoder_widths)
        self.bn = RunningStats(LATENT_CHANNELS * PATCH * PATCH)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.bn.running_mean.to(device=like.device, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.sqrt(self.bn.running_var.to(device=like.device, dtype=torch.float32) + EPS).view(1, -1, 1, 1)
        return mean, std

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        z = patchify(super().encode_raw(x))
        mean, std = self._stats(z)
        return (z - mean) / std

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return super().decode_raw(unpatchify(z.float() * std + mean))


def is_flux2_vae(shapes: Shapes, prefix: str) -> bool:
    conv_in = shapes.get(prefix + "decoder.conv_in.weight")
    return conv_in is not None and conv_in[1] == LATENT_CHANNELS and prefix + "bn.running_mean" in shapes


def decoder_widths(shapes: Shapes, prefix: str) -> tuple[int, ...]:
    """The decoder's channels per level, from the keys (BFL's small decoder is narrower than the encoder)."""
    widths = []
    while (shape := shapes.get(f"{prefix}decoder.up.{len(widths)}.block.0.conv2.weight")) is not None:
        widths.append(int(shape[0]))
    blocks = sum(1 for k in shapes if k.startswith(f"{prefix}decoder.up.0.block.") and k.endswith(".conv1.weight"))
    if widths and blocks != 3:
        from ...model.loading import UnsupportedModel

        raise UnsupportedModel(f"Flux.2 VAE decoder with {blocks} blocks per level (3 are supported)")
    return tuple(widths)


def flux2_vae(path: str, prefix: str, shapes: Shapes) -> VAE:
    dtype = lambda: storage_dtype("vae")  # noqa: E731
    widths = decoder_widths(shapes, prefix)

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        with torch.device("meta"):
            model = Flux2Autoencoder(widths or None)
        sd = {k: v.float() if k.startswith("bn.") and v.is_floating_point() else v for k, v in sd.items()}
        return load_module(model, sd, "Flux.2 VAE")

    keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix))
    weights = WeightsSource(key=f"{file_identity(path)}#{prefix}#flux2vae", read=part_reader(path, prefix, dtype),
                            build=build, keys=keys, size=part_size(path, prefix, torch.float32), dtype=dtype)
    return VAE(first_stage_model=VAEModel(weights), latent_channels=LATENT_CHANNELS * PATCH * PATCH,
               downscale_ratio=8 * PATCH)


