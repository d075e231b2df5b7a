"""Straightforward reference quantizers writing ComfyUI's mixed-precision layers (``comfy_quant`` + scales).

Written from the documented layouts (see model/quant_layouts.py), element by
element where it matters, so that the loader's vectorised decoding is checked
against something computed differently.
"""

from __future__ import annotations

import json
import math

import torch

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def comfy_quant(config: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(config).encode("utf-8")), dtype=torch.uint8)


def _up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def tile_position(rows: torch.Tensor, cols: torch.Tensor, col_tiles: int) -> torch.Tensor:
    """Flat index of block scale (row, col) in the 128x4-tiled layout."""
    tile = (rows // 128) * col_tiles + cols // 4
    return tile * 512 + (rows % 32) * 16 + ((rows % 128) // 32) * 4 + cols % 4


def swizzle(scales: torch.Tensor) -> torch.Tensor:
    rows, blocks = scales.shape
    row_tiles, col_tiles = _up(rows, 128) // 128, _up(blocks, 4) // 4
    flat = torch.zeros(row_tiles * col_tiles * 512, dtype=torch.float32)
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(blocks), indexing="ij")
    flat[tile_position(r.reshape(-1), c.reshape(-1), col_tiles)] = scales.float().reshape(-1)
    return flat.reshape(row_tiles * 128, col_tiles * 4).to(torch.float8_e4m3fn)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the even column in the high nibble."""
    codes = codes.to(torch.uint8)
    return (codes[:, 0::2] << 4) | codes[:, 1::2]


def e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """Nearest e2m1 code of each value (sign in bit 3)."""
    magnitude = (x.abs().unsqueeze(-1) - E2M1).abs().argmin(-1)
    return magnitude + 8 * (x < 0).long()


def nvfp4_layer(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """``weight``, ``weight_scale`` (tiled fp8 block scales), ``weight_scale_2`` of an NVFP4 layer."""
    rows, cols = weight.shape
    padded = torch.zeros(_up(rows, 16), _up(cols, 16))
    padded[:rows, :cols] = weight.float()
    tensor_scale = padded.abs().max() / (448.0 * 6.0)
    blocks = padded.reshape(padded.shape[0], -1, 16)
    block_scale = (blocks.abs().amax(-1) / 6.0 / tensor_scale).to(torch.float8_e4m3fn)
    total = block_scale.float() * tensor_scale
    total = torch.where(total == 0, torch.ones_like(total), total)
    codes = e2m1_codes((blocks / total.unsqueeze(-1)).reshape(padded.shape))
    return {"weight": pack_codes(codes), "weight_scale": swizzle(block_scale),
            "weight_scale_2": tensor_scale.reshape(()), "comfy_quant": comfy_quant({"format": "nvfp4"})}


def nvfp4_dequantize(packed: torch.Tensor, stored_scales: torch.Tensor, tensor_scale: torch.Tensor,
                     shape: tuple[int, int]) -> torch.Tensor:
    """Each value from its nibble and its block scale looked up at its tiled position (float32)."""
    rows, half = packed.shape
    codes = torch.zeros(rows, half * 2, dtype=torch.long)
    codes[:, 0::2] = (packed >> 4).long()
    codes[:, 1::2] = (packed & 15).long()
    values = E2M1[codes % 8] * torch.where(codes >= 8, -1.0, 1.0)
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(half * 2), indexing="ij")
    col_tiles = stored_scales.shape[1] // 4
    scales = stored_scales.float().reshape(-1)[tile_position(r, c // 16, col_tiles)]
    return (values * scales * tensor_scale.float())[: shape[0], : shape[1]]


def dequantize_layers(stored: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The float32 weights a quantized state dict stands for (the reference for loaders)."""
    out = {}
    for key, tensor in stored.items():
        layer, _, name = key.rpartition(".")
        config = f"{layer}.comfy_quant"
        if config not in stored:
            if name not in ("weight_scale", "weight_scale_2"):
                out[key] = tensor
            continue
        if name != "weight":
            continue
        fmt = json.loads(bytes(stored[config].tolist()).decode())
        if fmt["format"] == "nvfp4":
            out[key] = nvfp4_dequantize(tensor, stored[f"{layer}.weight_scale"], stored[f"{layer}.weight_scale_2"],
                                        shapes[key])
            continue
        w = tensor.double() * stored[f"{layer}.weight_scale"].double()
        if fmt.get("convrot"):
            group = fmt.get("convrot_groupsize", 256)
            rows, cols = w.shape
            w = (w.reshape(rows, cols // group, group) @ regular_hadamard(group).T).reshape(rows, cols)
        out[key] = w.float()
    return out


def regular_hadamard(size: int) -> torch.Tensor:
    h4 = torch.tensor([[1, 1, 1, -1], [1, 1, -1, 1], [1, -1, 1, 1], [-1, 1, 1, 1]], dtype=torch.float64)
    h = h4
    while h.shape[0] < size:
        h = torch.kron(h, h4)
    return h / math.sqrt(size)


def int8_layer(weight: torch.Tensor, per_row: bool = False, convrot: int | None = None,
               write_group: bool = True) -> dict[str, torch.Tensor]:
    """An ``int8_tensorwise`` layer: scale per tensor or per row; ``convrot``: rotate by groups first."""
    w = weight.double()
    config: dict = {"format": "int8_tensorwise"}
    if convrot is not None:
        rows, cols = w.shape
        h = regular_hadamard(convrot)
        w = (w.reshape(rows, cols // convrot, convrot) @ h.T).reshape(rows, cols)
        config["convrot"] = True
        if write_group:
            config["convrot_groupsize"] = convrot
        per_row = True
    scale = (w.abs().amax(-1, keepdim=True) if per_row else w.abs().max()) / 127.0
    q = torch.round(w / scale).clamp(-128, 127).to(torch.int8)
    return {"weight": q, "weight_scale": scale.float(), "comfy_quant": comfy_quant(config)}


def quantize_layers(sd: dict[str, torch.Tensor], formats: dict[str, dict]) -> dict[str, torch.Tensor]:
    """``sd`` with each layer named in ``formats`` replaced by its quantized tensors.

    ``formats`` maps a layer name to ``{"format": "nvfp4"}`` or ``int8_layer``'s
    keyword arguments plus ``"format": "int8"``.
    """
    out = dict(sd)
    for layer, spec in formats.items():
        weight = out.pop(f"{layer}.weight")
        spec = dict(spec)
        kind = spec.pop("format")
        tensors = nvfp4_layer(weight) if kind == "nvfp4" else int8_layer(weight, **spec)
        out.update({f"{layer}.{name}": t for name, t in tensors.items()})
    return out
