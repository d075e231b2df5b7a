"""optimized_attention: the CPU's small-attention path gives what PyTorch's SDPA gives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comfy_kernel_core_nodes.model import attention


def _sdpa(q, k, v, heads, mask=None):
    b, _, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, inner)


@pytest.mark.parametrize("tokens,context", [(64, 64), (64, 77), (16, 77), (4, 4)])
def test_small_attention_matches_sdpa(tokens, context):
    torch.manual_seed(0)
    q = torch.randn(2, tokens, 320)
    k, v = torch.randn(2, context, 320), torch.randn(2, context, 320)
    assert tokens * context <= attention.SMALL_ATTENTION
    out = attention.optimized_attention(q, k, v, 8)
    torch.testing.assert_close(out, _sdpa(q, k, v, 8), rtol=0, atol=2e-6)


@pytest.mark.parametrize("boolean", [True, False])
def test_small_attention_masks_as_sdpa_does(boolean):
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 16, 64), torch.randn(1, 24, 64), torch.randn(1, 24, 64)
    keep = torch.rand(16, 24) > 0.3
    keep[:, 0] = True
    mask = keep if boolean else torch.where(keep, 0.0, -1e4)
    out = attention.optimized_attention(q, k, v, 4, mask=mask)
    torch.testing.assert_close(out, _sdpa(q, k, v, 4, mask=mask[None, None]), rtol=0, atol=2e-6)


def test_large_attention_still_uses_sdpa(monkeypatch):
    calls = []
    monkeypatch.setattr(attention, "_small_attention", lambda *a: calls.append(a))
    q = torch.randn(1, 128, 64)
    out = attention.optimized_attention(q, q, q, 2)
    assert not calls and out.shape == q.shape
    torch.testing.assert_close(out, _sdpa(q, q, q, 2))
