"""How guide frames (LTXVAddGuide) take part in the transformer's video self-attention.

Guides sit at the end of the video tokens. Tokens a guide's noise mask marks
below 0 (the gaps of an IC-LoRA guide spread over a finer grid) are left out
of the sequence altogether (:func:`kept_tokens`). A guide added with a strength
other than 1, or with a pixel-space attention mask, weighs the attention
between the video and its tokens: ``log(weight)`` is added to the scores of
video queries on guide keys and of guide queries on video keys
(:class:`GuideBias`; a weight of 0 blocks). The queries are attended in three
groups so that no tokens x tokens mask is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def kept_tokens(denoise_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The video tokens to run [N] (bool), from the first sample's noise mask [B, C, F, H, W]; None: all of them."""
    if denoise_mask is None or denoise_mask.ndim != 5 or not (denoise_mask < 0).any():
        return None
    return ~(denoise_mask[0] < 0).any(dim=0).flatten()


def restore_left_out(out: torch.Tensor, kept: torch.Tensor | None, tokens: int) -> torch.Tensor:
    """Output tokens [B, kept, C] of a sequence that left tokens out -> [B, tokens, C], zeros where left out."""
    if kept is None:
        return out
    return out.new_zeros(out.shape[0], tokens, out.shape[-1]).index_copy(1, kept.nonzero().flatten(), out)


def guide_attention(entries: list[dict[str, Any]] | None, keyframe_idxs: torch.Tensor | None,
                    kept: torch.Tensor | None, total: int, dtype: torch.dtype,
                    device: torch.device) -> tuple[GuideBias | None, int]:
    """(:func:`guide_bias` for the guides at the end of a sequence of ``total`` run tokens, how many guide tokens
    are run); ``keyframe_idxs`` holds the guides' spans, ``kept`` the tokens run of the whole latent."""
    if keyframe_idxs is None or keyframe_idxs.shape[2] == 0:
        return None, 0
    count = keyframe_idxs.shape[2]
    tail = kept[-count:] if kept is not None else torch.ones(count, dtype=torch.bool, device=device)
    return guide_bias(entries, tail, total, dtype, device), int(tail.sum())


@dataclass
class GuideBias:
    """Additive attention scores for the tracked guide tokens ``[start, start + count)`` of a sequence."""

    start: int
    count: int
    video_rows: torch.Tensor  # [1, 1, 1, T]: every video query's bias on the guide keys
    guide_rows: torch.Tensor  # [1, 1, count, T]: each guide query's bias on the video keys

    def attend(self, attention: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        out = torch.empty_like(q)
        end = self.start + self.count
        if self.start:
            out[:, : self.start] = attention(q[:, : self.start], k, v, heads, mask=self.video_rows)
        out[:, self.start:end] = attention(q[:, self.start:end], k, v, heads, mask=self.guide_rows)
        if end < q.shape[1]:
            out[:, end:] = attention(q[:, end:], k, v, heads)
        return out


def guide_bias(entries: list[dict[str, Any]] | None, kept_guides: torch.Tensor, total: int,
               dtype: torch.dtype, device: torch.device) -> GuideBias | None:
    """The bias for ``entries`` (LTXVAddGuide's ``guide_attention_entries``, in order) over a sequence of
    ``total`` tokens ending with the guides; ``kept_guides`` [K] marks which guide tokens are in it."""
    if not entries:
        return None
    if sum(e["pre_filter_count"] for e in entries) != kept_guides.numel():
        raise ValueError(f"the guides' token counts ({sum(e['pre_filter_count'] for e in entries)}) do not match "
                         f"the {kept_guides.numel()} guide tokens of the latent")
    if all(e["strength"] == 1.0 and e.get("pixel_mask") is None for e in entries):
        return None
    weights, offset = [], 0
    for entry in entries:
        kept = int(kept_guides[offset:offset + entry["pre_filter_count"]].sum())
        offset += entry["pre_filter_count"]
        if kept == 0:
            continue
        if entry.get("pixel_mask") is not None:
            w = latent_weights(entry["pixel_mask"].to(device=device, dtype=dtype), *entry["latent_shape"])[:1]
            weights.append(w[:, :kept] * entry["strength"])
        else:
            weights.append(torch.full((1, kept), float(entry["strength"]), device=device, dtype=dtype))
    if not weights:
        return None
    w = torch.cat(weights, dim=1)
    if (w == 1.0).all():
        return None
    guides = int(kept_guides.sum())
    start, count = total - guides, w.shape[1]
    log_w = torch.full_like(w, torch.finfo(dtype).min)
    log_w[w > 0] = torch.log(w[w > 0].clamp(min=torch.finfo(dtype).tiny))
    video_rows = torch.zeros(1, 1, 1, total, device=device, dtype=dtype)
    video_rows[..., start:start + count] = log_w.view(1, 1, 1, -1)
    guide_rows = torch.zeros(1, 1, count, total, device=device, dtype=dtype)
    guide_rows[..., :start] = log_w.view(1, 1, -1, 1)
    return GuideBias(start, count, video_rows, guide_rows)


def latent_weights(mask: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """A pixel-space mask [B, 1, F, H, W] -> per-token weights [B, frames * height * width]: area-averaged per
    frame, the first pixel frame for the first latent frame, the others averaged in equal groups (or repeated
    when there are fewer pixel frames than latent frames)."""
    b, _, f_pix = mask.shape[:3]
    small = F.interpolate(mask.transpose(1, 2).flatten(0, 1), size=(height, width), mode="area")
    small = small.view(b, f_pix, height, width)
    first = small[:, :1]
    if f_pix > 1 and frames > 1:
        rest_pix, rest_lat = f_pix - 1, frames - 1
        group = rest_pix // rest_lat
        if group < 1:
            rest = F.interpolate(small[:, 1:].permute(0, 2, 3, 1).reshape(-1, 1, rest_pix), size=rest_lat,
                                 mode="nearest").view(b, height, width, rest_lat).permute(0, 3, 1, 2)
        else:
            rest = small[:, 1:1 + rest_lat * group].reshape(b, rest_lat, group, height, width).mean(dim=2)
        latent = torch.cat([first, rest], dim=1)
    elif frames > 1:
        latent = first.expand(-1, frames, -1, -1)
    else:
        latent = first
    return latent.reshape(b, -1)
