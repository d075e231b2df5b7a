"""UNet block and attention patches: FreeU, Kohya Deep Shrink, HyperTile and Token Merging.

Block patches go on ``input_block_patch(_after_skip)`` (``h, transformer_options``)
and ``output_block_patch`` (``h, hsp, transformer_options``, before each skip
concatenation); attention patches on ``attn1_patch`` (``q, k, v, extra_options``
where q/k/v are the normed tokens, before projection) and ``attn1_output_patch``.
HyperTile and ToMe draw their random choices from torch's global generator,
which the sampling run seeds, so a seed reproduces them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


# --- FreeU ---------------------------------------------------------------------------------


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """``x`` with the lowest spatial frequencies (a centred box of half-size ``threshold``) scaled by ``scale``."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    b, c, h, w = freq.shape
    mask = torch.ones((b, c, h, w), device=x.device)
    crow, ccol = h // 2, w // 2
    mask[..., crow - threshold:crow + threshold, ccol - threshold:ccol + threshold] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


def freeu(model_channels: int, b1: float, b2: float, s1: float, s2: float,
          v2: bool = False) -> Callable[[torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor]]:
    """FreeU (Si et al. 2023) as an output block patch.

    On the decoder blocks of 4x and 2x ``model_channels``: the first half of the
    backbone features is scaled by b1 / b2 (v2: scaled by 1 + (b - 1) x the
    normalised channel mean), and the skip features' lowest frequencies by s1 / s2.
    """
    scales = {model_channels * 4: (b1, s1), model_channels * 2: (b2, s2)}
    cpu_only: set[Any] = set()

    def filtered(hsp: torch.Tensor, scale: float) -> torch.Tensor:
        if hsp.device not in cpu_only:
            try:
                return fourier_filter(hsp, threshold=1, scale=scale)
            except Exception:  # a device without the FFT kernels
                log.warning("Device %s does not support torch.fft as FreeU uses it; filtering on the CPU", hsp.device)
                cpu_only.add(hsp.device)
        return fourier_filter(hsp.cpu(), threshold=1, scale=scale).to(hsp.device)

    def output_block_patch(h: torch.Tensor, hsp: torch.Tensor, transformer_options: Any):
        scale = scales.get(int(h.shape[1]))
        if scale is not None:
            half = h.shape[1] // 2
            if v2:
                mean = h.mean(1).unsqueeze(1)
                b = mean.shape[0]
                hi, _ = torch.max(mean.view(b, -1), dim=-1, keepdim=True)
                lo, _ = torch.min(mean.view(b, -1), dim=-1, keepdim=True)
                mean = (mean - lo.unsqueeze(2).unsqueeze(3)) / (hi - lo).unsqueeze(2).unsqueeze(3)
                h[:, :half] = h[:, :half] * ((scale[0] - 1) * mean + 1)
            else:
                h[:, :half] = h[:, :half] * scale[0]
            hsp = filtered(hsp, scale[1])
        return h, hsp

    return output_block_patch


# --- Kohya Deep Shrink ---------------------------------------------------------------------


def deep_shrink(block_number: int, downscale_factor: float, sigma_start: float, sigma_end: float,
                downscale_method: str, upscale_method: str) -> tuple[Callable, Callable]:
    """(input block patch, output block patch): the features after input block ``block_number`` are shrunk by
    ``downscale_factor`` while sigma is in [sigma_end, sigma_start]; decoder features are resized back to
    their skip connection's size."""
    from comfy_kernel.nodes.resize import common_upscale

    def input_block_patch(h: torch.Tensor, transformer_options: dict[str, Any]) -> torch.Tensor:
        if transformer_options["block"][1] == block_number:
            sigma = transformer_options["sigmas"][0].item()
            if sigma_end <= sigma <= sigma_start:
                h = common_upscale(h, round(h.shape[-1] * (1.0 / downscale_factor)),
                                   round(h.shape[-2] * (1.0 / downscale_factor)), downscale_method, "disabled")
        return h

    def output_block_patch(h: torch.Tensor, hsp: torch.Tensor, transformer_options: dict[str, Any]):
        if h.shape[2] != hsp.shape[2]:
            h = common_upscale(h, hsp.shape[-1], hsp.shape[-2], upscale_method, "disabled")
        return h, hsp

    return input_block_patch, output_block_patch


# --- HyperTile -----------------------------------------------------------------------------


def random_divisor(value: int, min_value: int, max_options: int = 1) -> int:
    """value // d for one of the ``max_options`` smallest divisors d >= min_value (chosen with torch.randint)."""
    min_value = min(min_value, value)
    divisors = [i for i in range(min_value, value + 1) if value % i == 0]
    options = [value // i for i in divisors[:max_options]]
    index = torch.randint(low=0, high=len(options) - 1, size=(1,)).item() if len(options) > 1 else 0
    return options[index]


def hypertile(tile_size: int, swap_size: int, max_depth: int, scale_depth: bool) -> tuple[Callable, Callable]:
    """(attn1 patch, attn1 output patch): self-attention on tiles of about ``tile_size`` pixels instead of the
    whole image, at the ``max_depth + 1`` highest resolutions (HyperTile, tfernd 2023)."""
    latent_tile_size = max(32, tile_size) // 8
    state: dict[str, Any] = {"tiles": None}

    def attn_in(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict[str, Any]):
        tokens = q.shape[-2]
        shape = extra_options["original_shape"]
        apply_to = [(shape[-2] / (2**i)) * (shape[-1] / (2**i)) for i in range(max_depth + 1)]
        if tokens in apply_to:
            aspect_ratio = shape[-1] / shape[-2]
            hw = q.size(1)
            h, w = round(math.sqrt(hw * aspect_ratio)), round(math.sqrt(hw / aspect_ratio))
            factor = (2 ** apply_to.index(tokens)) if scale_depth else 1
            nh = random_divisor(h, latent_tile_size * factor, swap_size)
            nw = random_divisor(w, latent_tile_size * factor, swap_size)
            if nh * nw > 1:
                b, _, c = q.shape
                # "b (nh h nw w) c -> (b nh nw) (h w) c"
                q = q.reshape(b, nh, h // nh, nw, w // nw, c).permute(0, 1, 3, 2, 4, 5)
                q = q.reshape(b * nh * nw, (h // nh) * (w // nw), c)
                state["tiles"] = (nh, nw, h, w)
        return q, k, v

    def attn_out(out: torch.Tensor, extra_options: dict[str, Any]) -> torch.Tensor:
        if state["tiles"] is not None:
            nh, nw, h, w = state["tiles"]
            state["tiles"] = None
            c = out.shape[-1]
            # "(b nh nw) (h w) c -> b (nh h nw w) c"
            out = out.reshape(-1, nh, nw, h // nh, w // nw, c).permute(0, 1, 3, 2, 4, 5)
            out = out.reshape(-1, h * w, c)
        return out

    return attn_in, attn_out


# --- Token Merging -------------------------------------------------------------------------


def _nothing(x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    return x


def bipartite_soft_matching_random2d(metric: torch.Tensor, w: int, h: int, sx: int, sy: int, r: int,
                                     no_rand: bool = False) -> tuple[Callable, Callable]:
    """ToMe for SD (Bolya & Hoffman 2023): (merge, unmerge) of the ``r`` most similar source tokens into their
    destination tokens; one random destination token per ``sx`` x ``sy`` cell."""
    b, n, _ = metric.shape
    if r <= 0 or w == 1 or h == 1:
        return _nothing, _nothing
    gather = torch.gather
    with torch.no_grad():
        hsy, wsx = h // sy, w // sx
        if no_rand:
            rand_idx = torch.zeros(hsy, wsx, 1, device=metric.device, dtype=torch.int64)
        else:
            rand_idx = torch.randint(sy * sx, size=(hsy, wsx, 1), device=metric.device)
        view = torch.zeros(hsy, wsx, sy * sx, device=metric.device, dtype=torch.int64)
        view.scatter_(dim=2, index=rand_idx, src=-torch.ones_like(rand_idx, dtype=rand_idx.dtype))
        view = view.view(hsy, wsx, sy, sx).transpose(1, 2).reshape(hsy * sy, wsx * sx)
        if (hsy * sy) < h or (wsx * sx) < w:
            buffer = torch.zeros(h, w, device=metric.device, dtype=torch.int64)
            buffer[:(hsy * sy), :(wsx * sx)] = view
        else:
            buffer = view
        # destination tokens are -1, sources 0: an argsort lists destinations first
        order = buffer.reshape(1, -1, 1).argsort(dim=1)
        num_dst = hsy * wsx
        a_idx = order[:, num_dst:, :]
        b_idx = order[:, :num_dst, :]

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            c = x.shape[-1]
            return (gather(x, dim=1, index=a_idx.expand(b, n - num_dst, c)),
                    gather(x, dim=1, index=b_idx.expand(b, num_dst, c)))

        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, bb = split(metric)
        scores = a @ bb.transpose(-1, -2)
        r = min(a.shape[1], r)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx = edge_idx[..., r:, :]
        src_idx = edge_idx[..., :r, :]
        dst_idx = gather(node_idx[..., None], dim=-2, index=src_idx)

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = split(x)
        nb, t1, c = src.shape
        unm = gather(src, dim=-2, index=unm_idx.expand(nb, t1 - r, c))
        src = gather(src, dim=-2, index=src_idx.expand(nb, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(nb, r, c), src, reduce=mode)
        return torch.cat([unm, dst], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        unm_len = unm_idx.shape[1]
        unm, dst = x[..., :unm_len, :], x[..., unm_len:, :]
        c = unm.shape[-1]
        src = gather(dst, dim=-2, index=dst_idx.expand(b, r, c))
        out = torch.zeros(b, n, c, device=x.device, dtype=x.dtype)
        out.scatter_(dim=-2, index=b_idx.expand(b, num_dst, c), src=dst)
        a_all = a_idx.expand(b, a_idx.shape[1], 1)
        out.scatter_(dim=-2, index=gather(a_all, dim=1, index=unm_idx).expand(b, unm_len, c), src=unm)
        out.scatter_(dim=-2, index=gather(a_all, dim=1, index=src_idx).expand(b, r, c), src=src)
        return out

    return merge, unmerge


def _tome_functions(x: torch.Tensor, ratio: float, original_shape: list[int]) -> tuple[Callable, Callable]:
    """Merging only at the full latent resolution (the first UNet level), with 2x2 destination cells."""
    _, _, original_h, original_w = original_shape
    downsample = int(math.ceil(math.sqrt((original_h * original_w) // x.shape[1])))
    if downsample <= 1:
        w = int(math.ceil(original_w / downsample))
        h = int(math.ceil(original_h / downsample))
        return bipartite_soft_matching_random2d(x, w, h, 2, 2, int(x.shape[1] * ratio), False)
    return _nothing, _nothing


def token_merging(ratio: float) -> tuple[Callable, Callable]:
    """(attn1 patch, attn1 output patch): self-attention queries merged by ``ratio``, outputs unmerged."""
    state: dict[str, Any] = {"unmerge": None}

    def attn_in(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict[str, Any]):
        merge, state["unmerge"] = _tome_functions(q, ratio, extra_options["original_shape"])
        return merge(q), k, v

    def attn_out(n: torch.Tensor, extra_options: dict[str, Any]) -> torch.Tensor:
        return state["unmerge"](n)

    return attn_in, attn_out
