"""Loading a whole checkpoint file and refusing what cannot be run."""

from __future__ import annotations

import pytest
import torch

from comfy_kernel_core_nodes.sd.checkpoint import UnsupportedCheckpoint, load_checkpoint

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_load_checkpoint(sd15_tiny_checkpoint):
    ckpt = load_checkpoint(sd15_tiny_checkpoint)
    assert ckpt.model_type == "sd15"
    assert ckpt.unet.dtype == torch.float32 and ckpt.vae.dtype == torch.float32
    assert ckpt.clip.final_layer_norm.weight.dtype == torch.float16
    assert ckpt.clip.embeddings.token_embedding.weight.shape == (49408, 768)


def test_file_without_unet_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vae_only.safetensors"
    save_file({"first_stage_model.quant_conv.weight": torch.zeros(8, 8, 1, 1)}, str(path))
    with pytest.raises(UnsupportedCheckpoint):
        load_checkpoint(path)


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_checkpoints_are_read_with_weights_only(tmp_path, zip_format):
    from comfy_kernel_core_nodes.sd.checkpoint import read_state_dict

    path = tmp_path / "model.ckpt"
    tensors = {"model.diffusion_model.out.2.bias": torch.arange(4.0)}
    torch.save({"state_dict": tensors, "global_step": 1}, str(path), _use_new_zipfile_serialization=zip_format)
    assert torch.equal(read_state_dict(path)["model.diffusion_model.out.2.bias"], torch.arange(4.0))


def test_build_clip_storage_dtype(sd15_tiny_parts):
    from comfy_kernel_core_nodes.sd.checkpoint import build_clip

    clip_sd = {k: v.float() for k, v in sd15_tiny_parts[2].items()}
    assert build_clip(clip_sd).final_layer_norm.weight.dtype == torch.float16
    assert build_clip(clip_sd, dtype=None).final_layer_norm.weight.dtype == torch.float32
