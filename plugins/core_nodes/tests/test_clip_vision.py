"""CLIP vision, style models, unCLIP's ADM and GLIGEN against ComfyUI 0.3.64's outputs for the same random files.

``data/clip_vision/expected.npz`` was captured from ComfyUI with the files
``_vision_files.py`` writes (see data/clip_vision/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _nodes import use_base  # noqa: E402
from _random_weights import write  # noqa: E402
from _vision_files import gligen_sd, style_model_sd, to_openclip, vit_l_file, vit_shapes  # noqa: E402

EXPECTED = np.load(Path(__file__).parent / "data" / "clip_vision" / "expected.npz")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def _close(got: torch.Tensor, key: str, rel: float = 1e-4) -> None:
    expected = EXPECTED[key]
    assert got.shape == expected.shape, key
    scale = max(float(np.abs(expected).max()), 1.0)
    assert float(np.abs(got.float().numpy() - expected).max()) <= rel * scale, key


def _image() -> torch.Tensor:
    return torch.rand(2, 37, 53, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def vit_l(tmp_path_factory) -> Path:
    use_base(tmp_path_factory.mktemp("vision"))
    return vit_l_file()


@pytest.fixture(scope="module")
def encoded(vit_l):
    from comfy_kernel_core_nodes.model.clip_vision import load

    model = load(str(vit_l))
    return model, model.encode_image(_image(), crop=True), model.encode_image(_image()[:1], crop=False)


def test_preprocessing_is_comfyuis():
    from comfy_kernel_core_nodes.components.clip_vision import preprocess

    for crop in (True, False):
        got = preprocess(_image(), crop=crop)
        assert got.shape == (2, 3, 224, 224)
        assert np.array_equal(got[:, :, ::8, ::8].numpy(), EXPECTED[f"pre_{crop}"])


def test_vit_l_encodes_like_comfyui(encoded):
    model, center, none = encoded
    assert model.config.name == "vit_l"
    for name, out in (("center", center), ("none", none)):
        _close(out.image_embeds, f"{name}_embeds")
        _close(out.last_hidden_state[:, :6, :32], f"{name}_last")
        _close(out.penultimate_hidden_states[:, :6, :32], f"{name}_penultimate")
        assert out["mm_projected"] is None and out["image_embeds"] is out.image_embeds


def test_the_openclip_layout_loads_the_same_weights(vit_l, tmp_path):
    from safetensors.torch import load_file

    from comfy_kernel_core_nodes.model.clip_vision import load

    hf = load_file(str(vit_l))
    openclip = write(tmp_path / "openclip.safetensors", to_openclip(hf))
    model = load(str(openclip))
    assert model.config.name == "vit_l"
    with model.patcher.use() as holder:
        loaded = holder.loaded_module.state_dict()
    assert set(loaded) == set(hf) - {"vision_model.embeddings.position_ids"}
    for key in ("vision_model.encoder.layers.3.self_attn.k_proj.weight", "visual_projection.weight",
                "vision_model.embeddings.patch_embedding.weight"):
        assert torch.equal(loaded[key].half(), hf[key]), key


def test_the_encoders_are_told_apart_by_their_keys():
    from comfy_kernel_core_nodes.components.clip_vision import config_from_keys

    for name in ("vit_l", "vit_h", "vit_bigg", "vit_l_336"):
        assert config_from_keys(vit_shapes(name)).name == name
    assert config_from_keys({"encoder.layer.23.layer_scale2.lambda1": (1024,)}) is None


def test_style_model_apply_matches_comfyui(encoded, tmp_path):
    from comfy_kernel_core_nodes.model.style_model import load_style_model
    from comfy_kernel_core_nodes.nodes.clip_vision import StyleModelApply

    style = load_style_model(str(write(tmp_path / "style.safetensors", style_model_sd())))
    g = torch.Generator().manual_seed(0)
    torch.rand(2, 37, 53, 3, generator=g)
    cond = [[torch.randn(1, 77, 768, generator=g), {"pooled_output": torch.zeros(1, 768)}]]
    for kind in ("multiply", "attn_bias"):
        (out,) = StyleModelApply().apply_stylemodel(cond, style, encoded[1], 0.6, kind)
        assert out[0][0].shape == (1, 77 + 16, 768)
        assert torch.equal(out[0][0][:, :77], cond[0][0])
        _close(out[0][0][:, 77:, :64], f"style_{kind}")
        if kind == "attn_bias":
            assert np.array_equal(out[0][1]["attention_mask"].float().numpy(), EXPECTED["style_attn_bias_mask"])
        else:
            assert "attention_mask" not in out[0][1]


def test_unclip_adm_matches_comfyui(encoded):
    from comfy_kernel_core_nodes.families.sd_unclip.models import NoiseAugmentor, unclip_adm

    adm = unclip_adm([{"clip_vision_output": encoded[2], "strength": 0.8, "noise_augmentation": 0.3}], "cpu",
                     NoiseAugmentor(768), 0.05, 42 - 10)
    _close(adm, "unclip_adm")


def test_gligen_patches_match_comfyui(tmp_path):
    from comfy_kernel_core_nodes.model.gligen import load_gligen

    patcher = load_gligen(str(write(tmp_path / "gligen.safetensors", gligen_sd())))
    assert set(patcher.model.weights.keys) == set(patcher.model.loaded_module.state_dict())
    g = torch.Generator().manual_seed(0)
    torch.rand(2, 37, 53, 3, generator=g)
    torch.randn(1, 77, 768, generator=g)
    pooled = torch.randn(1, 768, generator=g)
    x = torch.randn(2, 64, 320, generator=g)
    patch = patcher.model.set_position((2, 4, 8, 8), [(pooled, 4, 6, 1, 2), (pooled * 0.5, 2, 2, 5, 5)], "cpu")
    for idx in range(4):
        xx = torch.cat([x, x], dim=2)[:, :16] if idx == 1 else x
        _close(patch(xx, {"transformer_index": idx})[:, :8, :32], f"gligen_{idx}")
    _close(patcher.model.set_empty((2, 4, 8, 8), "cpu")(x, {"transformer_index": 0})[:, :8, :32], "gligen_empty")


def test_missing_weights_are_reported(tmp_path):
    from comfy_kernel_core_nodes.model.clip_vision import UnsupportedClipVision, load

    write(tmp_path / "dino.safetensors", {"encoder.layer.23.layer_scale2.lambda1": torch.zeros(4)})
    with pytest.raises(UnsupportedClipVision, match="supported"):
        load(str(tmp_path / "dino.safetensors"))
