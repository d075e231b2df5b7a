"""LoRA: key maps, the delta maths, and patched clones that leave the base model intact."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from _nodes import use_base  # noqa: E402

from comfy_kernel_core_nodes.model import lora as lora_keys  # noqa: E402
from comfy_kernel_core_nodes.model.weights import calculate_weight  # noqa: E402
from comfy_kernel_core_nodes.nodes import lora  # noqa: E402

SD15_LAYOUT = {"channel_mult": (1, 2, 4, 4), "num_res_blocks": (2, 2, 2, 2)}


@pytest.fixture(scope="module")
def sd15_keys() -> set[str]:
    from comfy_kernel_core_nodes.families.sd.models import SD15, unet_layout
    from comfy_kernel_core_nodes.families.sd.unet import UNetModel

    config = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "transformer_depth": (1, 1, 1, 1, 1, 1, 0, 0),
              "transformer_depth_output": (1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0), "transformer_depth_middle": 1,
              "context_dim": 768, "use_linear_in_transformer": False, "adm_in_channels": None, **SD15_LAYOUT}
    with torch.device("meta"):
        return set(UNetModel(unet_layout(SD15(config).unet_config)).state_dict())


def test_diffusers_names_of_the_sd15_layout(sd15_keys):
    names = lora_keys.unet_to_diffusers(SD15_LAYOUT, sd15_keys)
    assert names["down_blocks.0.attentions.0.proj_in.weight"] == "input_blocks.1.1.proj_in.weight"
    assert names["down_blocks.1.resnets.1.conv1.weight"] == "input_blocks.5.0.in_layers.2.weight"
    assert names["down_blocks.0.downsamplers.0.conv.weight"] == "input_blocks.3.0.op.weight"
    assert names["up_blocks.1.resnets.1.conv_shortcut.weight"] == "output_blocks.4.0.skip_connection.weight"
    assert names["up_blocks.2.upsamplers.0.conv.weight"] == "output_blocks.8.2.conv.weight"
    assert names["up_blocks.0.upsamplers.0.conv.weight"] == "output_blocks.2.1.conv.weight"
    assert (names["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
            == "middle_block.1.transformer_blocks.0.attn2.to_k.weight")
    assert names["mid_block.resnets.1.time_emb_proj.weight"] == "middle_block.2.emb_layers.1.weight"
    assert names["conv_in.weight"] == "input_blocks.0.0.weight" and names["conv_out.bias"] == "out.2.bias"


def test_kohya_and_peft_deltas():
    rank = 2
    up, down = torch.randn(8, rank, 1, 1), torch.randn(rank, 8, 1, 1)
    cup, cdown = torch.randn(8, rank, 1, 1), torch.randn(rank, 4, 3, 3)
    key_map = {"lora_unet_a": "diffusion_model.a.weight", "lora_unet_b": "diffusion_model.b.weight"}
    loaded = lora_keys.load_lora({
        "lora_unet_a.lora_up.weight": up, "lora_unet_a.lora_down.weight": down, "lora_unet_a.alpha": torch.tensor(1.0),
        "lora_unet_b.lora_B.weight": cup, "lora_unet_b.lora_A.weight": cdown,
    }, key_map)
    a = calculate_weight([(0.5, loaded["diffusion_model.a.weight"], 1.0, None, None)], torch.zeros(8, 8, 1, 1), "a")
    expected = 0.5 * (1.0 / rank) * (up.flatten(1) @ down.flatten(1)).reshape(8, 8, 1, 1)
    assert torch.allclose(a, expected, atol=1e-6)
    b = calculate_weight([(0.5, loaded["diffusion_model.b.weight"], 1.0, None, None)], torch.zeros(8, 4, 3, 3), "b")
    assert torch.allclose(b, 0.5 * (cup.flatten(1) @ cdown.flatten(1)).reshape(8, 4, 3, 3), atol=1e-6)


def test_diff_set_and_merge_patches():
    w = torch.ones(2, 2)
    assert torch.equal(calculate_weight([(2.0, (torch.full((2, 2), 3.0),), 1.0, None, None)], w.clone(), "k"),
                       torch.full((2, 2), 7.0))
    assert torch.equal(calculate_weight([(1.0, ("set", (torch.zeros(2, 2),)), 1.0, None, None)], w.clone(), "k"),
                       torch.zeros(2, 2))
    other = [(torch.full((2, 2), 5.0), lambda a, **kw: a)]
    merged = calculate_weight([(0.25, other, 0.75, None, None)], w.clone(), "k")
    assert torch.allclose(merged, torch.full((2, 2), 0.75 * 1 + 0.25 * 5))


@pytest.fixture
def lora_base(tmp_path, sd15_tiny_checkpoint):
    use_base(tmp_path)
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(sd15_tiny_checkpoint, checkpoints / "tiny.safetensors")
    (tmp_path / "models" / "loras").mkdir(parents=True)
    return tmp_path


def test_lora_nodes_patch_clones_and_keep_the_base(lora_base):
    from comfy_kernel_core_nodes.nodes.loaders import CheckpointLoaderSimple

    up, down = torch.randn(320, 2, 1, 1) * 0.1, torch.randn(2, 320, 1, 1) * 0.1
    te_up, te_down = torch.randn(768, 2) * 0.1, torch.randn(2, 768) * 0.1
    save_file({"lora_unet_input_blocks_1_1_proj_in.lora_up.weight": up,
               "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": down,
               "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": te_up,
               "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": te_down},
              str(lora_base / "models" / "loras" / "style.safetensors"))
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")
    assert lora.LoraLoader.INPUT_TYPES()["required"]["lora_name"][0] == ["style.safetensors"]
    new_model, new_clip = lora.LoraLoader().load_lora(model, clip, "style.safetensors", 0.8, 0.5)
    assert new_model is not model and not model.patches and new_model.weights_key() != model.weights_key()
    again, _ = lora.LoraLoader().load_lora(model, clip, "style.safetensors", 0.8, 0.5)
    assert again.weights_key() == new_model.weights_key()  # the same file and strength: the same loaded weights
    with model.use() as base, new_model.use() as patched:
        w0 = base.diffusion_model.input_blocks[1][1].proj_in.weight
        w1 = patched.diffusion_model.input_blocks[1][1].proj_in.weight
        delta = 0.8 * (up.flatten(1) @ down.flatten(1)).reshape(320, 320, 1, 1)
        assert torch.allclose(w1 - w0, delta, atol=1e-4)
    with clip.patcher.use() as base, new_clip.patcher.use() as patched:
        q0 = base.loaded_module.encoder.layers[0].self_attn.q_proj.weight.float()
        q1 = patched.loaded_module.encoder.layers[0].self_attn.q_proj.weight.float()
        assert torch.allclose(q1 - q0, 0.5 * te_up @ te_down, atol=2e-3)  # fp16 storage
    (only,) = lora.LoraLoaderModelOnly().load_lora_model_only(model, "style.safetensors", 1.0)
    assert len(only.patches) == 1
    with pytest.raises(FileNotFoundError):
        lora.LoraLoaderModelOnly().load_lora_model_only(model, "missing.safetensors", 1.0)
