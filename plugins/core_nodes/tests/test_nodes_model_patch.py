"""Model patches (comfy_extras.nodes_model_patch): loading by keys, and where and how they change the model.

The DiffSynth ControlNet runs on a tiny Qwen-Image transformer (3 blocks of 64
channels) with a 2-block patch and the Wan 2.1 VAE at 16 base channels; USO's
projector on a tiny Flux (256 channels) with a small SigLIP encoder of 20
layers; Z-Image's fun ControlNet on a 64-channel Z-Image with its 30 main
blocks and the Flux VAE. Expected values are computed here from the file's
tensors where the maths is short.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _files_model_patch import blockwise_controlnet_sd, uso_projector_sd, z_image_fun_controlnet_sd  # noqa: E402
from _files_qwen import wan21_vae_narrow  # noqa: E402
from _random_weights import module_shapes, random_state_dict, write  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DIM = 64
TINY_QWEN = dict(in_channels=64, out_channels=16, num_layers=3, attention_head_dim=32, num_attention_heads=2,
                 joint_attention_dim=24, axes_dims_rope=(8, 12, 12))


@pytest.fixture(scope="module")
def vae():
    from comfy_kernel_core_nodes.model.loading import load_vae

    return load_vae(str(wan21_vae_narrow()))


@pytest.fixture(scope="module")
def qwen():
    from comfy_kernel_core_nodes.families.qwen_image.transformer import QwenImageConfig, QwenImageTransformer

    with torch.device("meta"):
        net = QwenImageTransformer(QwenImageConfig(**TINY_QWEN))
    net.load_state_dict(random_state_dict(module_shapes(net), 3, torch.float32), assign=True)
    return net.eval()


def _patch_file(tmp_path: Path, name: str, sd: dict) -> str:
    return str(write(tmp_path / name, sd))


def _apply(model_patch, vae, image, strength=1.0, mask=None):
    from comfy_kernel_core_nodes.model.patcher import ModelPatcher
    from comfy_kernel_core_nodes.nodes.model_patch import QwenImageDiffsynthControlnet

    base = ModelPatcher(torch.nn.Identity())
    (patched,) = QwenImageDiffsynthControlnet().diffsynth_controlnet(base, model_patch, vae, image, strength, mask)
    assert "patches" not in base.model_options["transformer_options"]  # the input MODEL is left alone
    (patch,) = patched.model_options["transformer_options"]["patches"]["double_block"]
    return patch


class _Recorder:
    def __init__(self) -> None:
        self.seen: dict[int, torch.Tensor] = {}

    def __call__(self, kwargs: dict) -> dict:
        self.seen[kwargs["block_index"]] = kwargs["img"].clone()
        return kwargs


def _run(net, x, patches=()):
    g = torch.Generator().manual_seed(5)
    context = torch.randn(x.shape[0], 6, TINY_QWEN["joint_attention_dim"], generator=g)
    options = {"patches": {"double_block": list(patches)}} if patches else {}
    with torch.no_grad():
        return net(x, torch.full((x.shape[0],), 0.6), context, transformer_options=options)


def _expected_tokens(sd: dict, vae, image: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The control tokens by hand: Wan 2.1 latent normalised, (+ keep-mask channel), 2x2 patches, img_in."""
    from comfy_kernel_core_nodes.model.latent_formats import Wan21

    latent = vae.encode(image)[:, :, 0]
    latent = Wan21().process_in(latent)
    if keep is not None:
        latent = torch.cat([latent, keep], dim=1)
    b, c, h, w = latent.shape
    tokens = latent.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * 4)
    return F.linear(tokens, sd["img_in.weight"], sd["img_in.bias"])


def _block(sd: dict, i: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    p = f"controlnet_blocks.{i}."
    h = rms(x, sd[p + "x_rms.weight"]) + rms(y, sd[p + "y_rms.weight"])
    h = F.gelu(F.linear(h, sd[p + "input_proj.weight"], sd[p + "input_proj.bias"]))
    return F.linear(h, sd[p + "output_proj.weight"], sd[p + "output_proj.bias"])


def test_loader_tells_the_kinds_apart_by_their_keys(tmp_path):
    from comfy_kernel_core_nodes.model.model_patch import (
        QWEN_BLOCKWISE,
        USO_PROJECTOR,
        UnsupportedModelPatch,
        load_model_patch,
    )

    cn = load_model_patch(_patch_file(tmp_path, "cn.safetensors", blockwise_controlnet_sd(DIM, 2)))
    assert cn.model.patch_kind == QWEN_BLOCKWISE
    assert (cn.model.patch_config.num_layers, cn.model.patch_config.dim, cn.model.patch_config.additional_in_dim) \
        == (2, DIM, 0)
    inpaint = load_model_patch(_patch_file(tmp_path, "inp.safetensors",
                                           blockwise_controlnet_sd(DIM, 1, inpaint=True)))
    assert inpaint.model.patch_config.additional_in_dim == 4
    uso = load_model_patch(_patch_file(tmp_path, "uso.safetensors", uso_projector_sd(256, 16, 32, 4)))
    assert uso.model.patch_kind == USO_PROJECTOR
    assert uso.model.patch_config.siglip_tokens == 16 and uso.model.patch_config.hidden_size == 256
    with uso.use() as holder:
        assert set(holder.loaded_module.levels) == {"high", "mid", "low"}
    with pytest.raises(UnsupportedModelPatch, match="unknown model patch"):
        load_model_patch(_patch_file(tmp_path, "other.safetensors", {"foo.weight": torch.zeros(2, 2)}))
    broken = blockwise_controlnet_sd(DIM, 1)
    del broken["controlnet_blocks.0.input_proj.bias"]
    with pytest.raises(UnsupportedModelPatch, match="missing"):
        load_model_patch(_patch_file(tmp_path, "broken.safetensors", broken))
    no_value = z_image_fun_controlnet_sd(DIM, 32, 96, 1, dtype=torch.float32)
    del no_value["control_layers.0.attention.to_v.weight"]
    with pytest.raises(UnsupportedModelPatch, match="qkv"):
        load_model_patch(_patch_file(tmp_path, "no_value.safetensors", no_value))


def test_diffsynth_controlnet_adds_its_blocks_after_the_matching_transformer_blocks(tmp_path, qwen, vae):
    from comfy_kernel_core_nodes.model.model_patch import load_model_patch

    sd = blockwise_controlnet_sd(DIM, 2)
    model_patch = load_model_patch(_patch_file(tmp_path, "cn.safetensors", sd))
    image = torch.rand(1, 40, 56, 4, generator=torch.Generator().manual_seed(1))  # alpha channel dropped
    x = torch.randn(2, 16, 1, 6, 8, generator=torch.Generator().manual_seed(2))   # 48x64 pixels, cond + uncond
    patch = _apply(model_patch, vae, image, strength=0.7)
    before, after = _Recorder(), _Recorder()
    controlled = _run(qwen, x, [before, patch, after])
    assert patch.cache[0] == (48, 64)  # re-encoded at the sampled size

    # 40x56 is wider than 48x64: one column cut each side, then "area" to the sample's size
    scaled = F.interpolate(image[..., 1:55, :3].movedim(-1, 1), size=(48, 64), mode="area").movedim(1, -1)
    tokens = _expected_tokens(sd, vae, scaled)
    assert tokens.shape == (1, 12, DIM)
    added = {i: after.seen[i] - before.seen[i] for i in range(3)}
    for i in (0, 1):
        expected = _block(sd, i, before.seen[i], tokens) * 0.7
        torch.testing.assert_close(added[i], expected, rtol=2e-3, atol=2e-3)
        assert expected.abs().mean() > 1e-2
    assert torch.equal(added[2], torch.zeros_like(added[2]))  # the patch has no block 2

    plain = _run(qwen, x)
    assert (controlled - plain).abs().mean() > 1e-3


def test_zero_initialised_patch_or_strength_zero_leaves_the_model_output_unchanged(tmp_path, qwen, vae):
    from comfy_kernel_core_nodes.model.model_patch import load_model_patch

    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(3))
    x = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    plain = _run(qwen, x)
    zero = load_model_patch(_patch_file(tmp_path, "zero.safetensors", blockwise_controlnet_sd(DIM, 3, zero_output=True)))
    assert torch.equal(_run(qwen, x, [_apply(zero, vae, image)]), plain)
    live = load_model_patch(_patch_file(tmp_path, "live.safetensors", blockwise_controlnet_sd(DIM, 3)))
    assert torch.equal(_run(qwen, x, [_apply(live, vae, image, strength=0.0)]), plain)
    assert not torch.equal(_run(qwen, x, [_apply(live, vae, image, strength=1.0)]), plain)


def test_inpaint_patch_reads_the_keep_mask_as_a_fifth_latent_channel(tmp_path, qwen, vae):
    from comfy_kernel_core_nodes.model.model_patch import load_model_patch

    sd = blockwise_controlnet_sd(DIM, 1, inpaint=True)
    model_patch = load_model_patch(_patch_file(tmp_path, "inpaint.safetensors", sd))
    image = torch.rand(1, 32, 48, 3, generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(1, 32, 48)
    mask[:, :, 24:] = 1.0  # repaint the right half
    x = torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(7))
    with model_patch.use() as holder:
        net = holder.loaded_module
        masked = _apply(model_patch, vae, image, mask=mask).control_tokens(net, 32, 48)
        unmasked = _apply(model_patch, vae, image).control_tokens(net, 32, 48)
        empty = _apply(model_patch, vae, image, mask=torch.zeros(1, 32, 48)).control_tokens(net, 32, 48)
    keep = torch.ones(1, 1, 4, 6)
    torch.testing.assert_close(unmasked, _expected_tokens(sd, vae, image, keep), rtol=1e-4, atol=1e-4)
    keep[..., 3:] = 0.0
    torch.testing.assert_close(masked, _expected_tokens(sd, vae, image, keep), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(empty, unmasked)  # an empty mask keeps everything, as no mask does
    assert not torch.allclose(_run(qwen, x, [_apply(model_patch, vae, image, mask=mask)]),
                              _run(qwen, x, [_apply(model_patch, vae, image)]))


def _tiny_siglip():
    from comfy_kernel_core_nodes.components.clip_vision import SIGLIP_384, CLIPVisionModel

    cfg = replace(SIGLIP_384, width=32, layers=20, heads=2, mlp_width=48, image_size=56)
    with torch.device("meta"):
        net = CLIPVisionModel(cfg)
    net.load_state_dict(random_state_dict(module_shapes(net), 8, torch.float32), assign=True)
    return net.eval()


def test_siglip_gives_every_layer_output_when_asked():
    encoder = _tiny_siglip()
    pixels = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        _, every, _ = encoder(pixels, intermediate="all")
        assert every.shape == (1, 20, 16, 32)
        for depth in (-20, -11, -2):
            _, one, _ = encoder(pixels, intermediate=depth)
            torch.testing.assert_close(every[:, depth], one)


def _projected(sd: dict, features: torch.Tensor) -> torch.Tensor:
    parts = []
    for level, hidden in (("high", features[2]), ("mid", features[1]), ("low", features[0])):
        p = f"feature_embedder.{level}_"
        t = {k: v.float() for k, v in sd.items() if k.startswith(p)}
        pooled = F.silu(F.linear(hidden.transpose(1, 2), t[p + "embedding_linear.0.weight"],
                                 t[p + "embedding_linear.0.bias"])).transpose(1, 2)
        normed = F.layer_norm(pooled, (pooled.shape[-1],), t[p + "layer_norm.weight"], t[p + "layer_norm.bias"])
        parts.append(F.linear(normed, t[p + "projection.weight"], t[p + "projection.bias"]))
    return torch.cat(parts, dim=1)


def test_uso_style_tokens_go_before_the_text_tokens(tmp_path):
    from _flux import flux_params, flux_state_dict

    from comfy_kernel_core_nodes.families.flux.model import Flux
    from comfy_kernel_core_nodes.model.clip_vision import Output
    from comfy_kernel_core_nodes.model.model_patch import load_model_patch
    from comfy_kernel_core_nodes.model.patcher import ModelPatcher
    from comfy_kernel_core_nodes.nodes.model_patch import USOStyleReference

    encoder = _tiny_siglip()
    with torch.no_grad():
        _, every, _ = encoder(torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(10)),
                              intermediate="all")
    vision = Output()
    vision["all_hidden_states"], vision["penultimate_hidden_states"] = every, every[:, -2]
    sd = uso_projector_sd(256, siglip_tokens=16, siglip_dim=32, style_tokens=4)
    model_patch = load_model_patch(_patch_file(tmp_path, "uso.safetensors", sd))
    base = ModelPatcher(torch.nn.Identity())
    (patched,) = USOStyleReference().apply_patch(base, model_patch, vision)
    (patch,) = patched.model_options["transformer_options"]["patches"]["post_input"]

    txt, txt_ids = torch.randn(2, 5, 256), torch.ones(2, 5, 3)
    out = patch({"img": None, "txt": txt, "img_ids": None, "txt_ids": txt_ids})
    assert out["txt"].shape == (2, 17, 256) and torch.equal(out["txt"][:, 12:], txt)
    features = torch.stack([every[:, -20], every[:, -11], every[:, -2]])
    torch.testing.assert_close(out["txt"][:1, :12], _projected(sd, features), rtol=1e-3, atol=1e-3)
    assert torch.equal(out["txt_ids"][:, :12], torch.zeros(2, 12, 3)) and torch.equal(out["txt_ids"][:, 12:], txt_ids)

    with torch.device("meta"):
        flux = Flux(flux_params())
    flux.load_state_dict(flux_state_dict(flux_params(), dtype=torch.float32), assign=True)
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(11))
    context = torch.randn(1, 4, 256, generator=torch.Generator().manual_seed(12))
    args = dict(y=torch.zeros(1, 768), guidance=torch.tensor([3.5]))
    with torch.no_grad():
        plain = flux(x, torch.tensor([0.5]), context, **args)
        styled = flux(x, torch.tensor([0.5]), context, transformer_options=patched.model_options[
            "transformer_options"], **args)
    assert styled.shape == plain.shape and (styled - plain).abs().mean() > 1e-4

    with pytest.raises(ValueError, match="SigLIP"):
        no_layers = Output()
        no_layers["penultimate_hidden_states"] = every[:, -2]
        USOStyleReference().apply_patch(base, model_patch, no_layers)


Z_DIM = 64


@pytest.fixture(scope="module")
def flux_vae(tmp_path_factory):
    from _flux import vae16_state_dict

    from comfy_kernel_core_nodes.model.loading import load_vae

    return load_vae(str(write(tmp_path_factory.mktemp("vae") / "ae.safetensors", vae16_state_dict())))


@pytest.fixture(scope="module")
def z_image():
    """A Z-Image transformer of 64 channels with the full 30 main blocks (the control layers spread over 30)."""
    from comfy_kernel_core_nodes.families.lumina2.nextdit import Z_IMAGE, NextDiT

    config = replace(Z_IMAGE, dim=Z_DIM, n_heads=2, n_kv_heads=2, ffn_hidden=96, cap_feat_dim=24,
                     axes_dims=(8, 12, 12), n_layers=30)
    with torch.device("meta"):
        net = NextDiT(config)
    net.load_state_dict(random_state_dict(module_shapes(net), 14, torch.float32), assign=True)
    return net.eval()


class _ZRecorder:
    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], torch.Tensor] = {}

    def __call__(self, kwargs: dict) -> dict:
        self.seen[(kwargs.get("block_type", "double"), kwargs["block_index"])] = kwargs["img"].clone()
        return {}


def _z_run(net, x, patches=()):
    context = torch.randn(x.shape[0], 5, 24, generator=torch.Generator().manual_seed(15))
    options = {"patches": {"noise_refiner": list(patches), "double_block": list(patches)}} if patches else {}
    with torch.no_grad():
        return net(x, torch.full((x.shape[0],), 0.4), context, transformer_options=options)


def _z_patch(tmp_path, name, sd, vae, image, strength=1.0):
    from comfy_kernel_core_nodes.model.model_patch import load_model_patch
    from comfy_kernel_core_nodes.model.patcher import ModelPatcher
    from comfy_kernel_core_nodes.nodes.model_patch import QwenImageDiffsynthControlnet

    model_patch = load_model_patch(_patch_file(tmp_path, name, sd))
    base = ModelPatcher(torch.nn.Identity())
    (patched,) = QwenImageDiffsynthControlnet().diffsynth_controlnet(base, model_patch, vae, image, strength)
    patches = patched.model_options["transformer_options"]["patches"]
    assert patches["noise_refiner"] == patches["double_block"]  # one object at both points
    return model_patch, patches["double_block"][0]


def _added(net, x, patch):
    before, after = _ZRecorder(), _ZRecorder()
    out = _z_run(net, x, [before, patch, after])
    return out, {k: after.seen[k] - before.seen[k] for k in before.seen}


@pytest.mark.parametrize("refiner_control", [False, True], ids=["first-release", "2.x"])
def test_z_image_fun_controlnet_adds_at_every_30_over_n_blocks(tmp_path, z_image, flux_vae, refiner_control):
    from comfy_kernel_core_nodes.model.model_patch import Z_IMAGE_FUN

    layers = 3 if refiner_control else 6
    sd = z_image_fun_controlnet_sd(Z_DIM, 32, 96, layers, refiner_control, dtype=torch.float32)
    image = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(16))
    x = torch.randn(2, 16, 6, 8, generator=torch.Generator().manual_seed(17))
    model_patch, patch = _z_patch(tmp_path, "fun.safetensors", sd, flux_vae, image)
    config = model_patch.model.patch_config
    assert model_patch.model.patch_kind == Z_IMAGE_FUN
    assert (config.n_control_layers, config.additional_in_dim, config.refiner_control) == \
        (layers, 17 if refiner_control else 0, refiner_control)

    controlled, added = _added(z_image, x, patch)
    every = 30 // layers
    changed = {k for k, v in added.items() if v.abs().max() > 0}
    expected = {("double", k * every) for k in range(layers)}
    if refiner_control:
        expected |= {("noise_refiner", 0), ("noise_refiner", 1)}
    assert changed == expected
    assert (controlled - _z_run(z_image, x)).abs().mean() > 1e-4

    _, half = _added(z_image, x, _z_patch(tmp_path, "fun_half.safetensors", sd, flux_vae, image, 0.5)[1])
    first = ("noise_refiner", 0) if refiner_control else ("double", 0)
    torch.testing.assert_close(added[first], 2 * half[first], rtol=1e-4, atol=1e-5)
    # a second evaluation starts from a fresh control state and gives the same result
    torch.testing.assert_close(_z_run(z_image, x, [patch]), controlled)


def test_z_image_fun_controlnet_with_zero_residuals_leaves_the_output_unchanged(tmp_path, z_image, flux_vae):
    sd = z_image_fun_controlnet_sd(Z_DIM, 32, 96, 3, True, zero_output=True, dtype=torch.float32)
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(18))
    x = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(19))
    _, patch = _z_patch(tmp_path, "zero.safetensors", sd, flux_vae, image)
    assert torch.equal(_z_run(z_image, x, [patch]), _z_run(z_image, x))


def test_z_image_fun_2x_input_is_control_latent_keep_mask_and_grey_inpaint_latent(tmp_path, flux_vae):
    from comfy_kernel_core_nodes.model.latent_formats import Flux
    from comfy_kernel_core_nodes.model.model_patch import load_model_patch
    from comfy_kernel_core_nodes.model.patcher import ModelPatcher
    from comfy_kernel_core_nodes.nodes.model_patch import QwenImageDiffsynthControlnet

    sd = z_image_fun_controlnet_sd(Z_DIM, 32, 96, 3, True, dtype=torch.float32)
    model_patch = load_model_patch(_patch_file(tmp_path, "fun2.safetensors", sd))
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(20))
    mask = torch.zeros(1, 32, 32)
    mask[..., 16:] = 1.0
    node = QwenImageDiffsynthControlnet()
    (patched,) = node.diffsynth_controlnet(ModelPatcher(torch.nn.Identity()), model_patch, flux_vae, image, 1.0,
                                           mask)
    patch = patched.model_options["transformer_options"]["patches"]["double_block"][0]
    latent = patch.control_latent(17, 32, 32)
    assert latent.shape == (1, 33, 4, 4)
    torch.testing.assert_close(latent[:, :16], Flux().process_in(flux_vae.encode(image)))
    keep = torch.ones(1, 1, 4, 4)
    keep[..., 2:] = 0.0
    assert torch.equal(latent[:, 16:17], keep)
    grey = Flux().process_in(flux_vae.encode(torch.full_like(image, 0.5)))
    torch.testing.assert_close(latent[:, 17:], grey)
