"""VAE: images <-> latents, in ComfyUI's ``comfy.sd.VAE`` shape.

The network (a family's autoencoder) implements ``encode_raw(x) -> latent``
for images in [-1, 1] (channels first) and ``decode_raw(z) -> x``; the
:class:`VAE` around it converts IMAGE tensors ([B, H, W, C] in [0, 1]), crops
images to a multiple of the compression, batches by memory, and offers tiled
variants that blend three tilings so seams do not show. Weights live in the
model manager like every model's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import WeightsHolder, WeightsSource
from .patcher import ModelPatcher

#: Images encoded/decoded per network call: bounds activation memory of big batches.
BATCH = 4


class VAEModel(WeightsHolder):
    """The autoencoder network behind a VAE (ComfyUI's ``first_stage_model``)."""

    def __init__(self, weights: WeightsSource, key_prefix: str = "") -> None:
        self.weights = weights
        self.key_prefix = key_prefix

    def memory_required(self, input_shape: Any = None) -> int:
        return 0


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - overlap, max(tile - overlap, 1)))
    return [max(0, min(size - overlap, s)) for s in starts]


def tiled_map(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: tuple[int, int], overlap: int,
              scale: float, out_channels: int) -> torch.Tensor:
    """Apply a resolution-changing ``fn`` tile by tile and blend the tiles with linear feathering.

    ``x`` is [B, C, H, W]; tiles are (tile_h, tile_w) input pixels overlapping by
    ``overlap``; each output tile is ``scale`` times larger and is weighted by a
    mask that ramps up over the (scaled) overlap at every edge.
    """
    b, _, h, w = x.shape
    th, tw = tile
    out = torch.zeros(b, out_channels, round(h * scale), round(w * scale), device=x.device)
    weight = torch.zeros(b, 1, out.shape[2], out.shape[3], device=x.device)
    feather = round(overlap * scale)
    for y in _tile_starts(h, th, overlap):
        for xs in _tile_starts(w, tw, overlap):
            result = fn(x[:, :, y: y + th, xs: xs + tw]).to(out.device).float()
            mask = torch.ones(1, 1, result.shape[2], result.shape[3], device=x.device)
            for dim in (2, 3):
                if feather >= mask.shape[dim]:
                    continue
                for t in range(feather):
                    a = (t + 1) / feather
                    mask.narrow(dim, t, 1).mul_(a)
                    mask.narrow(dim, mask.shape[dim] - 1 - t, 1).mul_(a)
            oy, ox = round(y * scale), round(xs * scale)
            out[:, :, oy: oy + result.shape[2], ox: ox + result.shape[3]] += result * mask
            weight[:, :, oy: oy + result.shape[2], ox: ox + result.shape[3]] += mask
    return out / weight


class VAE:
    """What VAE sockets carry; see the module docstring."""

    def __init__(self, sd: Any = None, device: Any = None, config: Any = None, dtype: Any = None,
                 metadata: Any = None, *, first_stage_model: VAEModel | None = None, latent_channels: int = 4,
                 downscale_ratio: int = 8, upscale_ratio: int | None = None, output_channels: int = 3,
                 latent_dim: int = 2) -> None:
        if first_stage_model is None:
            raise ValueError("comfy-kernel builds VAEs through its loaders (VAELoader, CheckpointLoaderSimple)")
        self.first_stage_model = first_stage_model
        self.patcher = ModelPatcher(first_stage_model)
        self.latent_channels = latent_channels
        self.downscale_ratio = downscale_ratio
        self.upscale_ratio = upscale_ratio or downscale_ratio
        self.output_channels = output_channels
        self.latent_dim = latent_dim
        self.device = self.patcher.load_device
        self.offload_device = self.patcher.offload_device
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)

    @property
    def vae_dtype(self) -> torch.dtype:
        return self.first_stage_model.get_dtype()

    def throw_exception_if_invalid(self) -> None:
        pass

    def spacial_compression_decode(self) -> int:
        return self.upscale_ratio

    def spacial_compression_encode(self) -> int:
        return self.downscale_ratio

    def temporal_compression_decode(self) -> int | None:
        return None

    def crop(self, pixels: torch.Tensor) -> torch.Tensor:
        """Centre-crop IMAGE [B, H, W, C] so H and W are multiples of the compression."""
        m = self.downscale_ratio
        h, w = pixels.shape[1], pixels.shape[2]
        nh, nw = (h // m) * m, (w // m) * m
        if (nh, nw) == (h, w):
            return pixels
        top, left = (h % m) // 2, (w % m) // 2
        return pixels[:, top: top + nh, left: left + nw, :]

    def _to_model(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.process_input(self.crop(pixels)[..., : self.output_channels].movedim(-1, 1))

    @torch.no_grad()
    def decode(self, samples_in: torch.Tensor, vae_options: dict[str, Any] | None = None) -> torch.Tensor:
        """Raw latents [B, C, h, w] -> IMAGE [B, H, W, C] in [0, 1] (float32, CPU)."""
        with self.patcher.use() as model:
            net = model.loaded_module
            parts = [self.process_output(net.decode_raw(samples_in[i: i + BATCH])).float().cpu()
                     for i in range(0, samples_in.shape[0], BATCH)]
        return torch.cat(parts).movedim(1, -1)

    @torch.no_grad()
    def encode(self, pixel_samples: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, C] -> raw latents [B, C, H/8, W/8] (float32, CPU); the posterior's mean."""
        x = self._to_model(pixel_samples)
        step = x.shape[0] if self.latent_dim == 3 else BATCH  # video VAEs: the images are one clip's frames
        with self.patcher.use() as model:
            net = model.loaded_module
            parts = [net.encode_raw(x[i: i + step]).float().cpu() for i in range(0, x.shape[0], step)]
        return torch.cat(parts)

    @torch.no_grad()
    def decode_tiled(self, samples: torch.Tensor, tile_x: int | None = None, tile_y: int | None = None,
                     overlap: int | None = None, tile_t: int | None = None, overlap_t: int | None = None) -> torch.Tensor:
        """Like :meth:`decode`, tile by tile (tile and overlap in latent units); three tilings averaged."""
        tile_x, tile_y, overlap = tile_x or 64, tile_y or 64, 16 if overlap is None else overlap
        if samples.ndim == 5:
            return self._decode_tiled_video(samples, tile_x, tile_y, overlap, tile_t, overlap_t)
        passes = [(tile_y * 2, tile_x // 2), (tile_y // 2, tile_x * 2), (tile_y, tile_x)]
        with self.patcher.use() as model:
            net = model.loaded_module
            total = sum(tiled_map(samples, net.decode_raw, (th, tw), overlap, self.upscale_ratio,
                                  self.output_channels) for th, tw in passes)
        return self.process_output(total / len(passes)).float().cpu().movedim(1, -1)

    def _decode_tiled_video(self, samples: torch.Tensor, tile_x: int, tile_y: int, overlap: int,
                            tile_t: int | None, overlap_t: int | None) -> torch.Tensor:
        """Video latents [B, C, T, h, w] decoded in chunks of ``tile_t`` latent frames and spatial tiles.

        A chunk of n latent frames decodes to 1 + r (n - 1) frames (r the temporal compression)
        placed at r times its first latent frame; overlaps are blended with linear feathering
        in every dimension, as ComfyUI's 3-d tiling does.
        """
        r = self.temporal_compression_decode() or 1
        s = self.upscale_ratio
        tile = (max(2, tile_t or 999), tile_y, tile_x)
        lap = (max(1, overlap_t or 1), overlap, overlap)
        size = (lambda n: max(0, 1 + r * (n - 1)) if r > 1 else n, lambda n: n * s, lambda n: n * s)
        where = (lambda i: i * r, lambda i: i * s, lambda i: i * s)
        b, _, *dims = samples.shape
        out = torch.zeros(b, self.output_channels, *[size[d](dims[d]) for d in range(3)])
        weight = torch.zeros(b, 1, *out.shape[2:])
        with self.patcher.use() as model:
            net = model.loaded_module
            for t0 in _tile_starts(dims[0], tile[0], lap[0]):
                for y0 in _tile_starts(dims[1], tile[1], lap[1]):
                    for x0 in _tile_starts(dims[2], tile[2], lap[2]):
                        part = samples[:, :, t0: t0 + tile[0], y0: y0 + tile[1], x0: x0 + tile[2]]
                        result = net.decode_raw(part).float().cpu()
                        mask = torch.ones(1, 1, *result.shape[2:])
                        for d in range(3):
                            feather = size[d](lap[d]) if d else max(0, r * lap[d] - (r - 1))
                            if feather <= 0 or feather >= mask.shape[d + 2]:
                                continue
                            for k in range(feather):
                                a = (k + 1) / feather
                                mask.narrow(d + 2, k, 1).mul_(a)
                                mask.narrow(d + 2, mask.shape[d + 2] - 1 - k, 1).mul_(a)
                        at = [where[d](v) for d, v in enumerate((t0, y0, x0))]
                        region = (slice(None), slice(None), *[slice(at[d], at[d] + result.shape[d + 2])
                                                              for d in range(3)])
                        out[region] += result * mask
                        weight[region] += mask
        return self.process_output(out / weight).movedim(1, -1)

    @torch.no_grad()
    def encode_tiled(self, pixel_samples: torch.Tensor, tile_x: int | None = None, tile_y: int | None = None,
                     overlap: int | None = None, tile_t: int | None = None, overlap_t: int | None = None) -> torch.Tensor:
        """Like :meth:`encode`, tile by tile (tile and overlap in pixels); three tilings averaged."""
        tile_x, tile_y, overlap = tile_x or 512, tile_y or 512, 64 if overlap is None else overlap
        x = self._to_model(pixel_samples)
        passes = [(tile_y, tile_x), (tile_y // 2, tile_x * 2), (tile_y * 2, tile_x // 2)]
        with self.patcher.use() as model:
            net = model.loaded_module
            total = sum(tiled_map(x, net.encode_raw, (th, tw), overlap, 1 / self.downscale_ratio,
                                  self.latent_channels) for th, tw in passes)
        return (total / len(passes)).float().cpu()

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.patcher.model_state_dict()


class AudioVAE(VAE):
    """A VAE whose decoded samples are waveforms [B, samples, channels] (the AUDIO type's layout).

    Each latent of the batch is decoded on its own: audio latents are long, and one at a time keeps
    the decoder's activations to a single clip.
    """

    audio_sample_rate = 44100

    @torch.no_grad()
    def decode(self, samples_in: torch.Tensor, vae_options: dict | None = None) -> torch.Tensor:
        with self.patcher.use() as model:
            net = model.loaded_module
            out = [net.decode_raw(samples_in[i: i + 1].to(self.device)).float().cpu()
                   for i in range(samples_in.shape[0])]
        return torch.cat(out).movedim(1, -1)


class _PixelSpace(torch.nn.Module):
    """The identity "autoencoder": latents are the images themselves (VAELoader's ``pixel_space``)."""

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return z.float()


def pixel_space_vae() -> VAE:
    weights = WeightsSource(key="pixel_space", read=lambda device: {}, build=lambda sd: _PixelSpace(),
                            keys=frozenset(), size=0)
    return VAE(first_stage_model=VAEModel(weights), latent_channels=3, downscale_ratio=1)
