"""Decoding ComfyUI's packed per-layer formats: NVFP4 and int8 (plain and "convrot").

ComfyUI's mixed-precision files mark each quantized layer with a
``<layer>.comfy_quant`` JSON tensor naming its format. Beside fp8 (model/ops.py
casts those directly) two packed formats are decoded here, one layer at a time
when it runs, so the file's footprint is what stays in memory:

* ``nvfp4``: the weight is ``uint8`` of shape (rows, cols / 2), rows and cols
  padded to multiples of 16, two 4-bit e2m1 codes per byte with the even
  column in the high nibble. Every 16 consecutive values of a row share an
  ``float8_e4m3fn`` block scale (``weight_scale``), stored in the 128x4-tiled
  ("swizzled") order tensor-core kernels read, padded to 128 rows and a
  multiple of 4 block columns; ``weight_scale_2`` is the per-tensor scale
  multiplied on top. ``pre_quant_scale`` (AWQ files) multiplies the input.
* ``int8_tensorwise``: ``int8`` weights times a scale per tensor or per row
  (``weight_scale`` of shape () or (rows, 1)). With ``"convrot": true`` the
  weight was rotated before quantizing: each group of ``convrot_groupsize``
  input columns multiplied by a normalized regular Hadamard matrix (Kronecker
  powers of a symmetric 4x4 one, so the rotation is its own inverse); decoding
  applies the same rotation again.
"""

from __future__ import annotations

import math

import torch

#: Values of the 16 e2m1 codes: sign bit, 2 exponent bits, 1 mantissa bit.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
NVFP4_BLOCK = 16
#: The 4x4 matrix whose Kronecker powers give the "regular" Hadamard matrices of convrot files.
REGULAR_H4 = ((1, 1, 1, -1), (1, 1, -1, 1), (1, -1, 1, 1), (-1, 1, 1, 1))

_tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
_hadamards: dict[tuple[int, torch.device], torch.Tensor] = {}


def _table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (device, dtype)
    if key not in _tables:
        _tables[key] = torch.tensor(E2M1_VALUES, dtype=dtype, device=device)
    return _tables[key]


def unswizzle_block_scales(stored: torch.Tensor, rows: int, blocks: int) -> torch.Tensor:
    """The (rows, blocks) block scales from their 128x4-tiled storage.

    Tiles of 128 rows x 4 block columns follow each other row-tile by row-tile;
    inside a tile, scale (r, c) sits at ``(r % 32) * 16 + (r // 32) * 4 + c``.
    """
    row_tiles, col_tiles = -(-rows // 128), -(-blocks // 4)
    if stored.numel() != row_tiles * col_tiles * 512:
        raise ValueError(f"NVFP4 block scales hold {stored.numel()} values; a {rows}x{blocks} grid "
                         f"in 128x4 tiles needs {row_tiles * col_tiles * 512}")
    tiles = stored.reshape(row_tiles, col_tiles, 32, 4, 4)
    grid = tiles.permute(0, 3, 2, 1, 4).reshape(row_tiles * 128, col_tiles * 4)
    return grid[:rows, :blocks]


def decode_nvfp4(packed: torch.Tensor, block_scale: torch.Tensor, shape: tuple[int, int],
                 dtype: torch.dtype) -> torch.Tensor:
    """The (out, in) weight of an NVFP4 layer in ``dtype``, block scales applied (not the per-tensor scale)."""
    rows, half = packed.shape
    codes = torch.stack((packed >> 4, packed & 0x0F), dim=-1).reshape(rows, half * 2)
    values = _table(packed.device, dtype)[codes.long()]
    blocks = half * 2 // NVFP4_BLOCK
    scales = unswizzle_block_scales(block_scale.view(torch.float8_e4m3fn), rows, blocks).to(dtype)
    values = (values.reshape(rows, blocks, NVFP4_BLOCK) * scales.unsqueeze(-1)).reshape(rows, half * 2)
    return values[: shape[0], : shape[1]]


def regular_hadamard(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The normalized regular Hadamard matrix of ``size`` (a power of 4), in float32."""
    if size < 4 or 4 ** round(math.log(size, 4)) != size:
        raise ValueError(f"convrot group size {size} is not a power of 4")
    key = (size, torch.device(device))
    if key not in _hadamards:
        h4 = torch.tensor(REGULAR_H4, dtype=torch.float32)
        matrix = h4
        while matrix.shape[0] < size:
            matrix = torch.kron(matrix, h4)
        _hadamards[key] = (matrix / math.sqrt(size)).to(device)
    return _hadamards[key]


def unrotate(weight: torch.Tensor, group: int) -> torch.Tensor:
    """Undo a convrot weight's rotation (in float32, returned in the weight's dtype)."""
    rows, cols = weight.shape
    if cols % group:
        raise ValueError(f"convrot group size {group} does not divide the {cols} input features")
    h = regular_hadamard(group, weight.device)
    out = weight.float().reshape(rows, cols // group, group) @ h.T
    return out.reshape(rows, cols).to(weight.dtype)


def decode(module: torch.nn.Module, like: torch.Tensor) -> torch.Tensor | None:
    """A packed layer's weight at ``like``'s device and dtype (before ``scale_weight``), or None if not packed."""
    weight = module.weight
    if weight.dtype == torch.uint8 and getattr(module, "block_scale", None) is not None:
        return decode_nvfp4(weight.to(like.device), module.block_scale.to(like.device), module.quant_shape,
                            like.dtype)
    return None


def finish(module: torch.nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """Apply what comes after the scales: a convrot layer's inverse rotation."""
    group = getattr(module, "convrot_group", None)
    if group is None:
        return weight
    return unrotate(weight, int(group))


def prepare(module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Make each packed layer of ``sd`` able to receive its tensors (module built on the meta device).

    The layer's float weight parameter becomes one of the file's dtype and shape,
    its logical shape is kept in ``quant_shape``, and its block scales,
    convrot group and input scale get buffers.
    """
    for key, tensor in sd.items():
        if not key.endswith(".weight") or tensor.dtype not in (torch.uint8, torch.int8):
            continue
        layer = module.get_submodule(key[: -len(".weight")])
        current = getattr(layer, "weight", None)
        if current is None or current.dtype in (torch.uint8, torch.int8):
            continue
        if not getattr(layer, "decodes_packed", False):
            raise ValueError(f"{key}: NVFP4 / int8 weights are supported on Linear layers and embeddings, "
                             f"not on {type(layer).__name__}")
        layer.quant_shape = tuple(current.shape)
        layer.weight = torch.nn.Parameter(torch.empty(tensor.shape, dtype=tensor.dtype, device="meta"),
                                          requires_grad=False)
        base = key[: -len(".weight")]
        for name in ("block_scale", "pre_quant_scale"):
            if f"{base}.{name}" in sd:
                layer.register_buffer(name, torch.empty(sd[f"{base}.{name}"].shape, device="meta"))
        if f"{base}.convrot_group" in sd:
            layer.register_buffer("convrot_group", torch.empty((), dtype=torch.int64, device="meta"))
