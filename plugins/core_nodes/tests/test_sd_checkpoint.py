"""Loading a whole checkpoint file through the model API, and refusing what cannot be run."""

from __future__ import annotations

import shutil

import pytest
import torch

from comfy_kernel_core_nodes.model.loading import UnsupportedModel, load_checkpoint, load_diffusion_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_load_checkpoint_detects_sd15_from_the_header(sd15_tiny_checkpoint):
    from comfy_kernel_core_nodes.families.sd.models import SD15

    model, clip, vae = load_checkpoint(str(sd15_tiny_checkpoint))
    assert isinstance(model.model.model_config, SD15)
    assert model.model.latent_format.scale_factor == 0.18215
    assert "diffusion_model.input_blocks.0.0.weight" in model.model.state_dict_keys()
    assert "clip_l.transformer.text_model.final_layer_norm.weight" in clip.cond_stage_model.state_dict_keys()
    assert vae.latent_channels == 4 and vae.spacial_compression_encode() == 8
    assert float(model.get_model_object("model_sampling").sigma_max) == pytest.approx(14.614642, rel=1e-6)


def test_loaded_networks_have_the_policy_dtypes(sd15_tiny_checkpoint):
    model, clip, vae = load_checkpoint(str(sd15_tiny_checkpoint))
    with model.use() as m:
        assert m.diffusion_model.dtype == torch.float32
    with clip.patcher.use() as encoder:
        assert encoder.loaded_module.final_layer_norm.weight.dtype == torch.float16
    with vae.patcher.use() as v:
        assert v.loaded_module.dtype == torch.float32


def test_the_same_checkpoint_shares_one_manager_entry(sd15_tiny_checkpoint):
    a, _, _ = load_checkpoint(str(sd15_tiny_checkpoint))
    b, _, _ = load_checkpoint(str(sd15_tiny_checkpoint))
    assert a.weights_key() == b.weights_key()
    patched = a.clone()
    patched.add_patches({"diffusion_model.out.2.bias": (torch.zeros(4),)})
    assert patched.weights_key() != a.weights_key()


def test_a_checkpoint_loads_as_a_bare_diffusion_model(sd15_tiny_checkpoint, tmp_path):
    target = tmp_path / "unet.safetensors"
    shutil.copy(sd15_tiny_checkpoint, target)
    model = load_diffusion_model(str(target))
    assert model.model.model_config.family == "sd15"


def test_file_without_unet_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vae_only.safetensors"
    save_file({"first_stage_model.quant_conv.weight": torch.zeros(8, 8, 1, 1)}, str(path))
    with pytest.raises(UnsupportedModel, match="not a checkpoint"):
        load_checkpoint(str(path))


def test_an_unknown_unet_layout_is_named_in_the_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "odd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(64, 4, 3, 3),
               "model.diffusion_model.out.2.weight": torch.zeros(4, 64, 3, 3)}, str(path))
    with pytest.raises(UnsupportedModel, match="matches no supported model"):
        load_checkpoint(str(path))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_checkpoints_are_read_with_weights_only(tmp_path, zip_format):
    from comfy_kernel_core_nodes.model.files import read_state_dict

    path = tmp_path / "model.ckpt"
    tensors = {"model.diffusion_model.out.2.bias": torch.arange(4.0)}
    torch.save({"state_dict": tensors, "global_step": 1}, str(path), _use_new_zipfile_serialization=zip_format)
    assert torch.equal(read_state_dict(path)["model.diffusion_model.out.2.bias"], torch.arange(4.0))


@pytest.mark.parametrize("fp8", ["float8_e4m3fn", "float8_e5m2"])
def test_fp8_weights_are_stored_in_fp8_and_computed_in_fp32(sd15_tiny_checkpoint, fp8):
    """UNETLoader's fp8 choices: a quarter of the fp32 memory, layers cast to the compute dtype as they run."""
    dtype = getattr(torch, fp8)
    base = load_diffusion_model(str(sd15_tiny_checkpoint))
    small = load_diffusion_model(str(sd15_tiny_checkpoint), {"dtype": dtype})
    assert small.weights_key() != base.weights_key()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([3.0, 3.0])
    context = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(1))
    with base.use() as m:
        ref = m.apply_model(x, sigma, c_crossattn=context)
    with small.use() as m:
        weight = m.diffusion_model.input_blocks[1][0].in_layers[2].weight
        assert weight.dtype == dtype and m.computation_dtype() == torch.float32
        out = m.apply_model(x, sigma, c_crossattn=context)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # e4m3 keeps 3 mantissa bits, e5m2 only 2: the error follows the format's precision
    assert float((out - ref).abs().max() / ref.abs().max()) < (0.15 if fp8 == "float8_e4m3fn" else 0.35)
