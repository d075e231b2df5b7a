"""Guidance that evaluates the model a second time with a degraded network or input.

Post-cfg (or cfg / calc_cond_batch) functions that call ``calc_cond_batch``
again, with a patch replacing part of the network for that extra evaluation
only: Perturbed-Attention Guidance (self-attention of the middle block
replaced by identity), Self-Attention Guidance (the input blurred where the
negative's middle self-attention looks), Skip Layer Guidance (DiT blocks
skipped) and Perp-Neg (an empty prompt as third prediction).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..model.attention import optimized_attention
from ..model.patcher import set_model_options_patch_replace
from ..sampling.guider import calc_cond_batch, convert_cond, encode_model_conds

Args = dict[str, Any]


# --- Perturbed-Attention Guidance ----------------------------------------------------------


def _identity_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Any,
                        mask: Any = None) -> torch.Tensor:
    return v


def perturbed_attention_guidance(scale: float, unet_block: str = "middle",
                                 unet_block_id: int = 0) -> Callable[[Args], torch.Tensor]:
    """PAG (Ahn et al. 2024): the positive again with the block's self-attention map set to identity
    (output = values); the guided result moves away from that prediction by ``scale``."""

    def post_cfg(args: Args) -> torch.Tensor:
        cfg_result = args["denoised"]
        if scale == 0:
            return cfg_result
        options = set_model_options_patch_replace(args["model_options"].copy(), _identity_attention, "attn1",
                                                  unet_block, unet_block_id)
        (pag,) = calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], options)
        return cfg_result + (args["cond_denoised"] - pag) * scale

    return post_cfg


# --- Self-Attention Guidance ---------------------------------------------------------------


def attention_with_scores(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                          attn_precision: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention returning the output and the [batch * heads, queries, keys] probabilities."""
    b, _, inner = q.shape
    dim_head = inner // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, -1, heads, dim_head).permute(0, 2, 1, 3).reshape(b * heads, -1, dim_head).contiguous()

    q, k, v = split(q), split(k), split(v)
    scale = dim_head**-0.5
    if attn_precision == torch.float32:
        sim = torch.einsum("b i d, b j d -> b i j", q.float(), k.float()) * scale
    else:
        sim = torch.einsum("b i d, b j d -> b i j", q, k) * scale
    sim = sim.softmax(dim=-1)
    out = torch.einsum("b i j, b j d -> b i d", sim.to(v.dtype), v)
    out = out.unsqueeze(0).reshape(b, heads, -1, dim_head).permute(0, 2, 1, 3).reshape(b, -1, heads * dim_head)
    return out, sim


def gaussian_blur_2d(img: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel1d = (pdf / pdf.sum()).to(device=img.device, dtype=img.dtype)
    kernel2d = torch.mm(kernel1d[:, None], kernel1d[None, :])
    kernel2d = kernel2d.expand(img.shape[-3], 1, kernel2d.shape[0], kernel2d.shape[1])
    pad = kernel_size // 2
    img = F.pad(img, [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(img, kernel2d, groups=img.shape[-3])


def create_blur_map(x0: torch.Tensor, attn: torch.Tensor, sigma: float = 3.0, threshold: float = 1.0) -> torch.Tensor:
    """``x0`` blurred where the attention map (averaged over heads) says tokens are much attended to."""
    _, hw1, hw2 = attn.shape
    b, _, lh, lw = x0.shape
    attn = attn.reshape(b, -1, hw1, hw2)
    mask = attn.mean(1, keepdim=False).sum(1, keepdim=False) > threshold
    total = mask.shape[-1]
    # the token grid's height: the divisor of the token count nearest the latent's aspect ratio
    x = round(math.sqrt((lh / lw) * total))
    found = None
    for i in range(0, math.floor(math.sqrt(total) / 2)):
        for j in [(x + i), max(1, x - i)]:
            if total % j == 0:
                found = j
                break
        if found is not None:
            break
    x = found
    y = total // x
    mask = mask.reshape(b, x, y).unsqueeze(1).type(attn.dtype)
    mask = F.interpolate(mask, (lh, lw))
    blurred = gaussian_blur_2d(x0, kernel_size=9, sigma=sigma)
    return blurred * mask + x0 * (1 - mask)


class SelfAttentionGuidance:
    """SAG (Hong et al. 2023): records the negative's middle-block self-attention while the model runs,
    then evaluates the negative on an input blurred where that attention concentrates.

    ``attn1_replace`` goes on ``("middle", 0, 0)``; ``post_cfg`` is a post-cfg
    function that needs the negative even at cfg 1.
    """

    def __init__(self, scale: float, blur_sigma: float) -> None:
        self.scale = scale
        self.blur_sigma = blur_sigma
        self.attn_scores: torch.Tensor | None = None

    def attn1_replace(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Args) -> torch.Tensor:
        heads = extra_options["n_heads"]
        cond_or_uncond = extra_options["cond_or_uncond"]
        b = q.shape[0] // len(cond_or_uncond)
        if 1 in cond_or_uncond:
            uncond_index = cond_or_uncond.index(1)
            out, sim = attention_with_scores(q, k, v, heads=heads, attn_precision=extra_options["attn_precision"])
            n_slices = heads * b
            self.attn_scores = sim[n_slices * uncond_index:n_slices * (uncond_index + 1)]
            return out
        return optimized_attention(q, k, v, heads=heads, attn_precision=extra_options["attn_precision"])

    def post_cfg(self, args: Args) -> torch.Tensor:
        uncond_pred = args["uncond_denoised"]
        cfg_result = args["denoised"]
        x = args["input"]
        if min(cfg_result.shape[2:]) <= 4:  # too small to pad for the blur
            return cfg_result
        degraded = create_blur_map(uncond_pred, self.attn_scores, self.blur_sigma, 1.0)
        degraded_noised = degraded + x - uncond_pred
        (sag,) = calc_cond_batch(args["model"], [args["uncond"]], degraded_noised, args["sigma"],
                                 args["model_options"])
        return cfg_result + (degraded - sag) * self.scale


# --- Skip Layer Guidance (DiT) -------------------------------------------------------------


def _skip_block(args: Any, extra_args: Any) -> Any:
    return args


def parse_layers(text: str) -> list[int]:
    """Every integer in the text (``"7, 8, 9"``)."""
    return [int(i) for i in re.findall(r"\d+", text)]


def skip_layer_options(model_options: dict[str, Any], double_layers: list[int],
                       single_layers: list[int]) -> dict[str, Any]:
    """``model_options`` with the DiT's ``("dit", ("double_block"|"single_block", i))`` replaced by a pass-through."""
    for layer in double_layers:
        model_options = set_model_options_patch_replace(model_options, _skip_block, "dit", "double_block", layer)
    for layer in single_layers:
        model_options = set_model_options_patch_replace(model_options, _skip_block, "dit", "single_block", layer)
    return model_options


def skip_layer_guidance(scale: float, sigma_start: float, sigma_end: float, double_layers: list[int],
                        single_layers: list[int], rescaling_scale: float) -> Callable[[Args], torch.Tensor]:
    """SLG (post-cfg): between the two sigmas, move away from the positive evaluated with the layers skipped."""

    def post_cfg(args: Args) -> torch.Tensor:
        cond_pred = args["cond_denoised"]
        cfg_result = args["denoised"]
        sigma = args["sigma"]
        options = skip_layer_options(args["model_options"].copy(), double_layers, single_layers)
        sigma_ = sigma[0].item()
        if scale > 0 and sigma_end <= sigma_ <= sigma_start:
            (slg,) = calc_cond_batch(args["model"], [args["cond"]], args["input"], sigma, options)
            cfg_result = cfg_result + (cond_pred - slg) * scale
            if rescaling_scale != 0:
                factor = cond_pred.std() / cfg_result.std()
                factor = rescaling_scale * factor + (1 - rescaling_scale)
                cfg_result *= factor
        return cfg_result

    return post_cfg


def skip_layer_guidance_simple(sigma_start: float, sigma_end: float, double_layers: list[int],
                               single_layers: list[int]) -> Callable[[Args], list]:
    """SLG simple (calc_cond_batch function): between the two sigmas the negative runs with the layers skipped."""

    def calc(args: Args) -> list:
        x, model, conds, sigma = args["input"], args["model"], args["conds"], args["sigma"]
        options = args["model_options"]
        slg_options = skip_layer_options(options.copy(), double_layers, single_layers)
        cond, uncond = conds
        sigma_ = sigma[0].item()
        if sigma_end <= sigma_ <= sigma_start and uncond is not None:
            cond_out, _ = calc_cond_batch(model, [cond, None], x, sigma, options)
            _, uncond_out = calc_cond_batch(model, [None, uncond], x, sigma, slg_options)
            return [cond_out, uncond_out]
        return calc_cond_batch(model, conds, x, sigma, options)

    return calc


# --- Perp-Neg ------------------------------------------------------------------------------


def perp_neg_cfg(empty_conditioning: list, neg_scale: float) -> Callable[[Args], torch.Tensor]:
    """Perp-Neg as a cfg function: the empty prompt is evaluated as a third prediction at every step."""
    from ..sampling.guiders import perp_neg

    nocond = convert_cond(empty_conditioning)

    def cfg(args: Args) -> torch.Tensor:
        model, x, sigma = args["model"], args["input"], args["sigma"]
        processed = encode_model_conds(model.extra_conds, nocond, x, x.device, "negative")
        (nocond_pred,) = calc_cond_batch(model, [processed], x, sigma, args["model_options"])
        return x - perp_neg(x, args["cond_denoised"], args["uncond_denoised"], nocond_pred, neg_scale,
                            args["cond_scale"])

    return cfg
