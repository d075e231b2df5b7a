"""Hypernetwork files: the key/value correction they add, written out independently of the loader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _control_files import hypernetwork_sd  # noqa: E402

from comfy_kernel_core_nodes.nodes.hypernetwork import load_hypernetwork_patch  # noqa: E402


def _expected(mlp: dict, x: torch.Tensor, layer_norm: bool) -> torch.Tensor:
    names = sorted({k.rsplit(".", 1)[0] for k in mlp}, key=lambda n: int(n.split(".")[1]))
    linears = names[0::2] if layer_norm else names
    h = x
    for i, name in enumerate(linears):
        h = h @ mlp[f"{name}.weight"].T + mlp[f"{name}.bias"]
        if i < len(linears) - 1 or layer_norm:  # ComfyUI activates every linear but the very last entry
            h = torch.relu(h)
        if layer_norm:
            norm = names[2 * i + 1]
            h = torch.nn.functional.layer_norm(h, (h.shape[-1],), mlp[f"{norm}.weight"], mlp[f"{norm}.bias"])
    return h


@pytest.mark.parametrize("layer_norm", [False, True])
def test_the_patch_adds_the_networks_correction(tmp_path, layer_norm):
    sd = hypernetwork_sd(layer_norm=layer_norm)
    path = tmp_path / "hn.pt"
    torch.save(sd, path)
    patch = load_hypernetwork_patch(str(path), 0.6)
    q, k, v = (torch.randn(2, 5, 320, generator=torch.Generator().manual_seed(i)) for i in range(3))
    q2, k2, v2 = patch(q, k, v, {})
    assert q2 is q
    assert torch.allclose(k2, k + _expected(sd[320][0], k, layer_norm) * 0.6, atol=1e-5)
    assert torch.allclose(v2, v + _expected(sd[320][1], v, layer_norm) * 0.6, atol=1e-5)
    other = torch.randn(2, 5, 640)
    assert patch(q, other, other, {})[1] is other  # a width the file does not cover is left alone


def test_an_unknown_activation_is_refused(tmp_path):
    path = tmp_path / "hn.pt"
    torch.save(hypernetwork_sd(activation="gelu-ish"), path)
    assert load_hypernetwork_patch(str(path), 1.0) is None
