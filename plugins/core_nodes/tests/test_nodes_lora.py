"""LoRA merging: the delta maths, the key layouts, and patched references that leave the base intact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from _nodes import use_base  # noqa: E402

from comfy_kernel_core_nodes.nodes import lora  # noqa: E402
from comfy_kernel_core_nodes.nodes.models import CLIPRef, UNetRef  # noqa: E402


def test_ldm_to_diffusers_names():
    assert lora.ldm_to_diffusers("input_blocks.1.1.proj_in") == "down_blocks.0.attentions.0.proj_in"
    assert lora.ldm_to_diffusers("input_blocks.5.0.in_layers.2") == "down_blocks.1.resnets.1.conv1"
    assert lora.ldm_to_diffusers("input_blocks.3.0.op") == "down_blocks.0.downsamplers.0.conv"
    assert lora.ldm_to_diffusers("output_blocks.4.0.skip_connection") == "up_blocks.1.resnets.1.conv_shortcut"
    assert lora.ldm_to_diffusers("output_blocks.8.2.conv") == "up_blocks.2.upsamplers.0.conv"
    assert (lora.ldm_to_diffusers("middle_block.1.transformer_blocks.0.attn2.to_k")
            == "mid_block.attentions.0.transformer_blocks.0.attn2.to_k")
    assert lora.ldm_to_diffusers("middle_block.2.emb_layers.1") == "mid_block.resnets.1.time_emb_proj"


def test_merge_linear_and_conv_deltas(tmp_path):
    sd = {
        "input_blocks.1.1.proj_in.weight": torch.zeros(8, 8, 1, 1),
        "input_blocks.1.0.in_layers.2.weight": torch.zeros(8, 4, 3, 3),
        "untouched.weight": torch.ones(2, 2),
    }
    rank = 2
    up, down = torch.randn(8, rank, 1, 1), torch.randn(rank, 8, 1, 1)
    cup, cdown = torch.randn(8, rank, 1, 1), torch.randn(rank, 4, 3, 3)
    path = tmp_path / "l.safetensors"
    save_file({
        "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": up,
        "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": down,
        "lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(1.0),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_B.weight": cup,
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_A.weight": cdown,
    }, str(path))
    out = lora.apply_loras(dict(sd), ((str(path), 0.5),), "unet", torch.float32)
    expected = 0.5 * (1.0 / rank) * (up.flatten(1) @ down.flatten(1)).reshape(8, 8, 1, 1)
    assert torch.allclose(out["input_blocks.1.1.proj_in.weight"], expected, atol=1e-6)
    conv = 0.5 * (cup.flatten(1) @ cdown.flatten(1)).reshape(8, 4, 3, 3)
    assert torch.allclose(out["input_blocks.1.0.in_layers.2.weight"], conv, atol=1e-6)
    assert torch.equal(out["untouched.weight"], sd["untouched.weight"])


def test_lora_nodes_return_patched_references(tmp_path):
    use_base(tmp_path)
    (tmp_path / "models" / "loras").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "style.safetensors").write_bytes(b"")
    model, clip = UNetRef("m.safetensors", "model.diffusion_model."), CLIPRef("m.safetensors", "cond.")
    assert lora.LoraLoader.INPUT_TYPES()["required"]["lora_name"][0] == ["style.safetensors"]
    new_model, new_clip = lora.LoraLoader().load_lora(model, clip, "style.safetensors", 0.8, 0.0)
    assert new_clip is clip and model.patches == ()
    assert new_model.patches == ((str(tmp_path / "models" / "loras" / "style.safetensors"), 0.8),)
    assert new_model._key() != model._key()
    (only,) = lora.LoraLoaderModelOnly().load_lora_model_only(model, "style.safetensors", 1.0)
    assert len(only.patches) == 1
    with pytest.raises(FileNotFoundError):
        lora.LoraLoaderModelOnly().load_lora_model_only(model, "missing.safetensors", 1.0)
