"""T2I-Adapters (full and light) and the T2I style adapter.

A T2I-Adapter turns a hint image into one feature map per UNet level, which
the UNet adds after the last input block of that level (the positions are
``None`` elsewhere). It runs once per hint, not per step. The full adapter
pixel-unshuffles the hint by 8 (16 for SDXL's), a light adapter by 8 with
small 1x1 "extractors". The style adapter turns CLIP vision hidden states
into a few extra text tokens (StyleModelApply).

Module names follow the released files (``conv_in``, ``body.N.block1``,
``body.N.in_conv``, ``transformer_layes`` ...). Layers cast their weights to
the activations' dtype, so the adapter computes in the sampler's dtype
whatever it is stored in, as ComfyUI's does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import ops as _ops

_OPS = _ops.manual_cast


class _Downsample(nn.Module):
    """Stride-2 3x3 conv, or 2x2 average pooling (odd sizes padded) when ``use_conv`` is false."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.op = _OPS.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv:
            return self.op(x)
        return F.avg_pool2d(x, kernel_size=2, stride=2, padding=[x.shape[2] % 2, x.shape[3] % 2])


class _ResnetBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, down: bool, ksize: int = 3, sk: bool = False,
                 use_conv: bool = True) -> None:
        super().__init__()
        ps = ksize // 2
        self.in_conv = _OPS.Conv2d(in_c, out_c, ksize, 1, ps) if in_c != out_c or not sk else None
        self.block1 = _OPS.Conv2d(out_c, out_c, 3, 1, 1)
        self.block2 = _OPS.Conv2d(out_c, out_c, ksize, 1, ps)
        self.skep = None if sk else _OPS.Conv2d(in_c, out_c, ksize, 1, ps)
        self.down = down
        if down:
            self.down_opt = _Downsample(in_c, use_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        h = self.block2(F.relu(self.block1(x)))
        return h + (self.skep(x) if self.skep is not None else x)


class Adapter(nn.Module):
    """The full T2I-Adapter; ``xl`` is SDXL's (unshuffle 16, three levels feed the UNet plus the middle)."""

    def __init__(self, channels: list[int], nums_rb: int = 2, cin: int = 192, ksize: int = 3, sk: bool = True,
                 use_conv: bool = False, xl: bool = False) -> None:
        super().__init__()
        self.xl = xl
        self.unshuffle_amount = 16 if xl else 8
        downsample = (2,) if xl else (3, 2, 1)
        no_downsample = (1,) if xl else ()
        self.input_channels = cin // (self.unshuffle_amount * self.unshuffle_amount)
        self.channels = channels
        self.nums_rb = nums_rb
        body = []
        for i in range(len(channels)):
            for j in range(nums_rb):
                if i in downsample and j == 0:
                    body.append(_ResnetBlock(channels[i - 1], channels[i], True, ksize, sk, use_conv))
                elif i in no_downsample and j == 0:
                    body.append(_ResnetBlock(channels[i - 1], channels[i], False, ksize, sk, use_conv))
                else:
                    body.append(_ResnetBlock(channels[i], channels[i], False, ksize, sk, use_conv))
        self.body = nn.ModuleList(body)
        self.conv_in = _OPS.Conv2d(cin, channels[0], 3, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor | None]]:
        x = self.conv_in(F.pixel_unshuffle(x, self.unshuffle_amount))
        features: list[torch.Tensor | None] = []
        for i in range(len(self.channels)):
            for j in range(self.nums_rb):
                x = self.body[i * self.nums_rb + j](x)
            if self.xl:
                features.append(None)
                if i == 0:
                    features += [None, None]
                if i == 2:
                    features.append(None)
            else:
                features += [None, None]
            features.append(x)
        features = features[::-1]
        if self.xl:
            return {"input": features[1:], "middle": features[:1]}
        return {"input": features}


class _ResnetBlockLight(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.block1 = _OPS.Conv2d(c, c, 3, 1, 1)
        self.block2 = _OPS.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(F.relu(self.block1(x))) + x


class _Extractor(nn.Module):
    def __init__(self, in_c: int, inter_c: int, out_c: int, nums_rb: int, down: bool) -> None:
        super().__init__()
        self.in_conv = _OPS.Conv2d(in_c, inter_c, 1, 1, 0)
        self.body = nn.Sequential(*[_ResnetBlockLight(inter_c) for _ in range(nums_rb)])
        self.out_conv = _OPS.Conv2d(inter_c, out_c, 1, 1, 0)
        self.down = down
        if down:
            self.down_opt = _Downsample(in_c, use_conv=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = self.down_opt(x)
        return self.out_conv(self.body(self.in_conv(x)))


class AdapterLight(nn.Module):
    """The light T2I-Adapter (SD1.x widths)."""

    def __init__(self, channels: list[int] | None = None, nums_rb: int = 4, cin: int = 192) -> None:
        super().__init__()
        channels = channels or [320, 640, 1280, 1280]
        self.unshuffle_amount = 8
        self.input_channels = cin // 64
        self.channels = channels
        self.nums_rb = nums_rb
        self.xl = False
        self.body = nn.ModuleList(
            _Extractor(cin if i == 0 else channels[i - 1], channels[i] // 4, channels[i], nums_rb, down=i > 0)
            for i in range(len(channels)))

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor | None]]:
        x = F.pixel_unshuffle(x, self.unshuffle_amount)
        features: list[torch.Tensor | None] = []
        for block in self.body:
            x = block(x)
            features += [None, None, x]
        return {"input": features[::-1]}


def adapter_from_keys(shapes: dict[str, tuple[int, ...]]) -> nn.Module | None:
    """The adapter network a T2I-Adapter state dict describes (built on the current device), or None."""
    if "body.0.in_conv.weight" in shapes:
        return AdapterLight(cin=shapes["body.0.in_conv.weight"][1], nums_rb=4)
    if "conv_in.weight" in shapes:
        cin, channel = shapes["conv_in.weight"][1], shapes["conv_in.weight"][0]
        ksize = shapes["body.0.block2.weight"][2]
        use_conv = any(k.endswith("down_opt.op.weight") for k in shapes)
        xl = cin in (256, 768)
        return Adapter(channels=[channel, channel * 2, channel * 4, channel * 4], nums_rb=2, cin=cin, ksize=ksize,
                       sk=True, use_conv=use_conv, xl=xl)
    return None


def diffusers_adapter_rename() -> dict[str, str]:
    """Prefix replacements from the diffusers T2I-Adapter layout to the original one."""
    out = {}
    for i in range(4):
        for j in range(2):
            out[f"adapter.body.{i}.resnets.{j}."] = f"body.{i * 2 + j}."
        out[f"adapter.body.{i}."] = f"body.{i * 2}."
    out["adapter."] = ""
    return out


# --- style adapter -----------------------------------------------------------------------------


class _ResidualAttentionBlock(nn.Module):
    """OpenAI CLIP's residual block over (sequence, batch, width), with torch's MultiheadAttention weights."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(d_model, d_model * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(d_model * 4, d_model))
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(*(self._ln(self.ln_1, x),) * 3, need_weights=False)[0]
        return x + self.mlp(self._ln(self.ln_2, x))

    @staticmethod
    def _ln(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return norm(x.float()).to(x.dtype)


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class StyleAdapter(nn.Module):
    """CLIP vision hidden states [B, N, width] -> ``num_token`` text-space tokens [B, num_token, context_dim]."""

    def __init__(self, width: int = 1024, context_dim: int = 768, num_head: int = 8, n_layes: int = 3,
                 num_token: int = 8) -> None:
        super().__init__()
        self.transformer_layes = nn.Sequential(*[_ResidualAttentionBlock(width, num_head) for _ in range(n_layes)])
        self.num_token = num_token
        self.style_embedding = nn.Parameter(torch.empty(1, num_token, width))
        self.ln_post = nn.LayerNorm(width)
        self.ln_pre = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, context_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        style = self.style_embedding + torch.zeros((x.shape[0], self.num_token, self.style_embedding.shape[-1]),
                                                   device=x.device)
        x = torch.cat([x, style.to(x.dtype)], dim=1)
        x = _ResidualAttentionBlock._ln(self.ln_pre, x).permute(1, 0, 2)
        x = self.transformer_layes(x).permute(1, 0, 2)
        x = _ResidualAttentionBlock._ln(self.ln_post, x[:, -self.num_token:, :])
        return x @ self.proj

