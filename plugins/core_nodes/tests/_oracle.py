"""Comparing a network with an independent implementation (diffusers / transformers) on the same weights."""

from __future__ import annotations

import torch


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    """``a`` equals ``b`` to ``rtol`` of ``b``'s largest magnitude."""
    err, scale = (a.float() - b.float()).abs().max().item(), b.float().abs().max().item()
    assert err <= rtol * scale, f"max error {err} against max value {scale}"


def randomize(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Give ``module`` random weights that keep activations O(1); returns them."""
    torch.manual_seed(seed)
    sd = {}
    for key, value in module.state_dict().items():
        if "gamma" in key or (value.ndim == 1 and "norm" in key and key.endswith("weight")):
            sd[key] = 1 + 0.1 * torch.randn_like(value)
        elif value.ndim > 1:
            sd[key] = torch.randn_like(value) * value[0].numel() ** -0.5
        else:
            sd[key] = 0.05 * torch.randn_like(value)
    module.load_state_dict(sd)
    return sd
