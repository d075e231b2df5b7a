"""Conditioning nodes and the composite guidance path, with stand-in tensors and a stand-in model."""

from __future__ import annotations

import torch

from comfy_kernel_core_nodes.nodes import conditioning as nodes
from comfy_kernel_core_nodes.sampling import guidance


def cond(value: float, tokens: int = 77) -> list:
    return [[torch.full((1, tokens, 768), value), {"pooled_output": torch.full((1, 768), value)}]]


def test_combine_average_concat_zero_out():
    a, b = cond(1.0), cond(3.0, 154)
    (combined,) = nodes.ConditioningCombine().combine(a, b)
    assert len(combined) == 2 and combined[0][1] is not a[0][1]
    (avg,) = nodes.ConditioningAverage().addWeighted(a, b, 0.25)
    assert avg[0][0].shape == (1, 77, 768) and torch.allclose(avg[0][0], torch.full((1, 77, 768), 2.5))
    assert torch.allclose(avg[0][1]["pooled_output"], torch.full((1, 768), 2.5))
    (longer,) = nodes.ConditioningAverage().addWeighted(b, a, 0.5)
    assert longer[0][0][0, 100, 0] == 1.5 and longer[0][0][0, 0, 0] == 2.0
    (cat,) = nodes.ConditioningConcat().concat(a, b)
    assert cat[0][0].shape == (1, 231, 768)
    (zero,) = nodes.ConditioningZeroOut().zero_out(a)
    assert not zero[0][0].any() and not zero[0][1]["pooled_output"].any() and a[0][0].all()


def test_area_and_mask_options():
    (area,) = nodes.ConditioningSetArea().append(cond(1.0), 64, 128, 8, 16, 0.5)
    assert area[0][1]["area"] == (16, 8, 2, 1) and area[0][1]["strength"] == 0.5
    (masked,) = nodes.ConditioningSetMask().append(cond(1.0), torch.ones(8, 8), 2.0, "mask bounds")
    opts = masked[0][1]
    assert opts["mask"].shape == (1, 8, 8) and opts["mask_strength"] == 2.0 and opts["set_area_to_bounds"]


def fake_model(x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Denoised = a per-row constant taken from the context, so blends are easy to predict."""
    return torch.ones_like(x) * context[:, :1, :1].reshape(-1, 1, 1, 1)


def test_plain_conditioning_passes_tensors_through():
    pos, neg = cond(2.0), cond(-1.0)
    fn, p, n = guidance.prepare(fake_model, pos, neg, torch.Size((1, 4, 8, 8)))
    assert fn is fake_model and p is pos[0][0] and n is neg[0][0]


def test_composite_blends_entries_by_area_and_strength():
    left = nodes.ConditioningSetArea().append(cond(4.0), 64, 64, 0, 0, 1.0)[0]
    positive = cond(2.0) + left
    fn, p, n = guidance.prepare(fake_model, positive, cond(-1.0), torch.Size((1, 4, 16, 16)))
    x = torch.zeros(2, 4, 16, 16)
    out = fn(x, torch.ones(2), torch.cat([n, p]))
    assert torch.allclose(out[0], torch.full((4, 16, 16), -1.0))
    # top-left 8x8 area: full weight in its interior away from the feathered edges -> (2 + 4) / 2
    assert torch.isclose(out[1, 0, 0, 0], torch.tensor(3.0))
    assert torch.isclose(out[1, 0, 15, 15], torch.tensor(2.0))
    assert 2.0 < out[1, 0, 7, 0] < 3.0


def test_composite_with_one_entry_equals_plain():
    masked = nodes.ConditioningSetMask().append(cond(5.0), torch.ones(16, 16), 1.0, "default")[0]
    fn, p, n = guidance.prepare(fake_model, masked, cond(1.0), torch.Size((1, 4, 16, 16)))
    out = fn(torch.zeros(2, 4, 16, 16), torch.ones(2), torch.cat([n, p]))
    assert torch.allclose(out[1], torch.full((4, 16, 16), 5.0)) and torch.allclose(out[0], torch.ones(4, 16, 16))
