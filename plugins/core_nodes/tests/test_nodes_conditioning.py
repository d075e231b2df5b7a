"""Conditioning nodes and the guidance maths (areas, masks, strengths, step ranges) with a stand-in network."""

from __future__ import annotations

import torch

from comfy_kernel_core_nodes.nodes import conditioning as nodes


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


class ConstantNet:
    """A stand-in network for the guidance maths: denoised = the first value of the entry's context."""

    def __init__(self) -> None:
        from comfy_kernel_core_nodes.model.base import ModelType, model_sampling

        self.model_sampling = model_sampling(None, ModelType.EPS)
        self.calls = []

    def extra_conds(self, cross_attn=None, **kwargs):
        from comfy_kernel_core_nodes.model.conds import CONDCrossAttn

        return {"c_crossattn": CONDCrossAttn(cross_attn)}

    def memory_required(self, input_shape, cond_shapes=None):
        return 0

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **kwargs):
        self.calls.append((x.shape[0], list(transformer_options["cond_or_uncond"])))
        return torch.ones_like(x) * c_crossattn[:, :1, :1].reshape(-1, 1, 1, 1)


def guided(positive, negative, shape, sigma=1.0):
    """Positive and negative predictions of one evaluation at ``sigma``, through the real guidance code."""
    from comfy_kernel_core_nodes.sampling import guider

    net = ConstantNet()
    x = torch.zeros(shape)
    conds = guider.process_conds(net, x, {"positive": guider.convert_cond(positive),
                                          "negative": guider.convert_cond(negative)}, "cpu")
    out = guider.calc_cond_batch(net, [conds["positive"], conds["negative"]], x,
                                 torch.full((shape[0],), sigma), {})
    return out, net.calls


def test_plain_conditioning_runs_negative_and_positive_as_one_batch():
    (pos, neg), calls = guided(cond(2.0), cond(-1.0), (1, 4, 8, 8))
    assert calls == [(2, [1, 0])]
    assert torch.allclose(pos, torch.full_like(pos, 2.0)) and torch.allclose(neg, torch.full_like(neg, -1.0))


def test_composite_blends_entries_by_area_and_strength():
    left = nodes.ConditioningSetArea().append(cond(4.0), 64, 64, 0, 0, 1.0)[0]
    (pos, neg), _ = guided(cond(2.0) + left, cond(-1.0), (1, 4, 16, 16))
    assert torch.allclose(neg, torch.full_like(neg, -1.0))
    # top-left 8x8 area: full weight in its interior away from the feathered edges -> (2 + 4) / 2
    assert torch.isclose(pos[0, 0, 0, 0], torch.tensor(3.0))
    assert torch.isclose(pos[0, 0, 15, 15], torch.tensor(2.0))
    assert 2.0 < pos[0, 0, 7, 0] < 3.0


def test_a_mask_over_everything_equals_plain():
    masked = nodes.ConditioningSetMask().append(cond(5.0), torch.ones(16, 16), 1.0, "default")[0]
    (pos, neg), _ = guided(masked, cond(1.0), (1, 4, 16, 16))
    assert torch.allclose(pos, torch.full_like(pos, 5.0)) and torch.allclose(neg, torch.ones_like(neg))


def test_a_step_range_switches_an_entry_off():
    late = [[t, {**o, "start_percent": 0.5, "end_percent": 1.0}] for t, o in cond(9.0)]
    # sigma 1 is late in SD1's schedule (past 50 %): both entries run and average
    (pos, _), _ = guided(cond(2.0) + late, cond(0.0), (1, 4, 8, 8), sigma=1.0)
    assert torch.allclose(pos, torch.full_like(pos, 5.5))
    # sigma 10 is early: the late entry is off
    (pos, _), _ = guided(cond(2.0) + late, cond(0.0), (1, 4, 8, 8), sigma=10.0)
    assert torch.allclose(pos, torch.full_like(pos, 2.0))
