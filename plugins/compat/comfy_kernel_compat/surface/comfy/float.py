"""ComfyUI's ``comfy.float``: stochastic rounding of weights to low-precision dtypes.

Rounding to float8 picks the representable neighbour above or below with a
probability proportional to the distance, from a generator seeded with
``seed``, so saving merged or LoRA-patched weights in float8 is unbiased and
reproducible. Other dtypes are plain casts.
"""

from __future__ import annotations

from typing import Any

_FP8 = {"float8_e4m3fn": (3, 7), "float8_e5m2": (2, 15)}  # mantissa bits, exponent bias


def manual_stochastic_round_to_float8(x: Any, dtype: Any, generator: Any = None) -> Any:
    """``x`` rounded stochastically onto ``dtype``'s grid (returned in float32, clamped to its range)."""
    import torch

    name = str(dtype).removeprefix("torch.")
    if name not in _FP8:
        raise ValueError("Unsupported dtype")
    mantissa_bits, bias = _FP8[name]
    x = x.float()
    magnitude = x.abs()
    exponent = torch.floor(torch.log2(magnitude.clamp_min(torch.finfo(torch.float32).tiny)))
    exponent = exponent.clamp_min(1 - bias)  # subnormals share the smallest normal exponent's spacing
    ulp = torch.pow(2.0, exponent - mantissa_bits)
    below = torch.floor(magnitude / ulp) * ulp
    chance = (magnitude - below) / ulp
    noise = torch.rand(x.shape, generator=generator, device=x.device)
    rounded = below + ulp * (noise < chance)
    info = torch.finfo(dtype)
    return (torch.sign(x) * rounded).clamp(info.min, info.max)


def stochastic_rounding(value: Any, dtype: Any, seed: int = 0) -> Any:
    import torch

    if str(dtype).removeprefix("torch.") not in _FP8:
        return value.to(dtype=dtype)
    generator = torch.Generator(device=value.device)
    generator.manual_seed(seed)
    return manual_stochastic_round_to_float8(value, dtype, generator).to(dtype)
