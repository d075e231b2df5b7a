"""Lumina 2 / Z-Image: NextDiT against diffusers, detection of ComfyUI's files, the Qwen3 4B text encoder.

Gemma 2 2B (Lumina 2's text encoder) is tested in test_family_lumina2_gemma.py.

diffusers is a test-only oracle. diffusers names the layers differently
(separate q/k/v, ``all_x_embedder.2-1`` ...), so its state dict is built
from ours by renaming; the numbers are the same tensors.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from _files_qwen import qwen3_4b, z_image_bf16
from _oracle import close, randomize

from comfy_kernel_core_nodes.components.llm.tokenizer import qwen_tokenizer
from comfy_kernel_core_nodes.families.lumina2.nextdit import Z_IMAGE, NextDiT, NextDiTConfig
from comfy_kernel_core_nodes.families.lumina2.text import TEMPLATE, ZImageTokenizer
from comfy_kernel_core_nodes.model import detection
from comfy_kernel_core_nodes.model.loading import (
    load_clip,
    load_diffusion_model,
    model_config,
)

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

Z_SMALL = NextDiTConfig(in_channels=4, dim=64, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2,
                        ffn_hidden=170, cap_feat_dim=24, axes_dims=(8, 12, 12), rope_theta=256.0,
                        z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32, t_hidden=1024)
L_SMALL = NextDiTConfig(in_channels=4, dim=64, n_layers=2, n_refiner_layers=1, n_heads=4, n_kv_heads=2,
                        ffn_hidden=256, cap_feat_dim=24, axes_dims=(4, 6, 6))


def _split_qkv(key: str, value: torch.Tensor, sizes: list[int], attention: str) -> dict[str, torch.Tensor]:
    base = key.replace(".attention.qkv.weight", f".{attention}.")
    q, k, v = value.split(sizes)
    return {base + "to_q.weight": q, base + "to_k.weight": k, base + "to_v.weight": v}


def to_diffusers_z_image(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if ".attention.qkv." in key:
            out.update(_split_qkv(key, value, [64, 64, 64], "attention"))
            continue
        key = key.replace("attention.out.", "attention.to_out.0.").replace("attention.q_norm", "attention.norm_q")
        key = key.replace("attention.k_norm", "attention.norm_k").replace("x_embedder.", "all_x_embedder.2-1.")
        out[key.replace("final_layer.", "all_final_layer.2-1.")] = value
    return out


def to_diffusers_lumina2(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renames = [("attention.out.", "attn.to_out.0."), ("attention.q_norm", "attn.norm_q"),
               ("attention.k_norm", "attn.norm_k"), ("t_embedder.mlp.0.", "time_caption_embed.timestep_embedder.linear_1."),
               ("t_embedder.mlp.2.", "time_caption_embed.timestep_embedder.linear_2."),
               ("cap_embedder.", "time_caption_embed.caption_embedder."), ("feed_forward.w1", "feed_forward.linear_1"),
               ("feed_forward.w2", "feed_forward.linear_2"), ("feed_forward.w3", "feed_forward.linear_3"),
               ("final_layer.adaLN_modulation.1.", "norm_out.linear_1."), ("final_layer.linear.", "norm_out.linear_2.")]
    out = {}
    for key, value in sd.items():
        if ".attention.qkv." in key:
            out.update(_split_qkv(key, value, [64, 32, 32], "attn"))
            continue
        for ours, theirs in renames:
            key = key.replace(ours, theirs)
        if key.startswith("context_refiner"):
            key = key.replace("attention_norm1", "norm1").replace("attention_norm2", "norm2")
        else:
            key = key.replace("adaLN_modulation.1.", "norm1.linear.").replace("attention_norm1", "norm1.norm")
            key = key.replace("attention_norm2", "norm2")
        out[key] = value
    return out


@pytest.mark.parametrize("variant", ["z_image", "lumina2"])
def test_nextdit_matches_diffusers(variant):
    config = Z_SMALL if variant == "z_image" else L_SMALL
    ours = NextDiT(config).eval()
    sd = randomize(ours, 7)
    g = torch.Generator().manual_seed(8)
    x, context, sigma = torch.randn(1, 4, 8, 12, generator=g), torch.randn(1, 7, 24, generator=g), torch.tensor([0.6])
    with torch.no_grad():
        out = ours(x, sigma, context)
        if variant == "z_image":
            ref = diffusers.ZImageTransformer2DModel(
                in_channels=4, dim=64, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=24,
                axes_dims=[8, 12, 12], axes_lens=[256, 64, 64]).eval()
            ref.load_state_dict(to_diffusers_z_image(sd))
            expected = ref([x[0].unsqueeze(1)], 1 - sigma, [context[0]], return_dict=False)[0][0][:, 0][None]
        else:
            ref = diffusers.Lumina2Transformer2DModel(
                sample_size=16, patch_size=2, in_channels=4, hidden_size=64, num_layers=2, num_refiner_layers=1,
                num_attention_heads=4, num_kv_heads=2, multiple_of=16, cap_feat_dim=24, axes_dim_rope=(4, 6, 6),
                axes_lens=(64, 64, 64)).eval()
            ref.load_state_dict(to_diffusers_lumina2(sd))
            expected = ref(x, 1 - sigma, context, torch.ones(1, 7, dtype=torch.bool), return_dict=False)[0]
    close(out, -expected)  # ComfyUI's NextDiT returns the negated prediction


def test_nextdit_patch_points_are_called():
    ours = NextDiT(Z_SMALL).eval()
    randomize(ours, 7)
    calls = []

    def record(kind):
        def patch(args):
            calls.append((kind, args["block_index"], args["img"].shape[1], args["txt"].shape[1]))
            return {"img": args["img"]}
        return patch

    options = {"patches": {"noise_refiner": [record("noise_refiner")], "double_block": [record("double_block")]}}
    with torch.no_grad():
        ours(torch.randn(1, 4, 8, 8), torch.tensor([0.5]), torch.randn(1, 5, 24), transformer_options=options)
    # 16 image tokens and 5 text tokens, both padded to 32
    assert calls == [("noise_refiner", 0, 32, 32), ("double_block", 0, 32, 32), ("double_block", 1, 32, 32)]
    assert options["total_blocks"] == 2


def test_z_image_file_is_detected_with_every_key():
    path = str(z_image_bf16())
    config, prefix = model_config(path)
    assert type(config).__name__ == "ZImage" and prefix == ""
    assert config.sampling_settings == {"multiplier": 1.0, "shift": 3.0}
    assert config.unet_config["n_heads"] == 30 and config.unet_config["pad_tokens_multiple"] == 32
    patcher = load_diffusion_model(path)
    with torch.device("meta"):
        expected = set(NextDiT(replace(Z_IMAGE, n_layers=1, n_refiner_layers=1)).state_dict())
    assert set(patcher.model.weights.keys) == expected
    assert patcher.model.latent_format.scale_factor == 0.3611  # Flux's 16-channel latents


def test_lumina2_width_is_told_apart_from_z_image():
    lumina = {"cap_embedder.1.weight": (2304, 2304), "layers.0.attention.qkv.weight": (96 * 40, 2304),
              "layers.0.attention.k_norm.weight": (96,), "layers.0.attention.q_norm.weight": (96,),
              "layers.0.feed_forward.w1.weight": (9216, 2304), "x_embedder.weight": (2304, 64),
              "t_embedder.mlp.0.weight": (1024, 256), "layers.0.adaLN_modulation.1.weight": (9216, 1024)}
    config = detection.model_config_from(lumina, "")
    assert type(config).__name__ == "Lumina2"
    assert (config.unet_config["n_heads"], config.unet_config["n_kv_heads"]) == (24, 8)
    assert config.sampling_settings["shift"] == 6.0


def test_template_matches_comfyui():
    tokens = ZImageTokenizer().tokenize_with_weights("a cat")["qwen3_4b"][0]
    assert [t for t, _ in tokens] == qwen_tokenizer().encode(TEMPLATE.format("a cat"))
    assert all(w == 1.0 for _, w in ZImageTokenizer().tokenize_with_weights("(a cat:1.5)")["qwen3_4b"][0])


def test_qwen3_text_encoder_file():
    clip = load_clip([str(qwen3_4b())], "lumina2")
    assert "qwen3_4b.transformer.model.layers.0.self_attn.q_norm.weight" in clip.cond_stage_model.state_dict_keys()
    tokens = clip.tokenize("a cat")
    cond = clip.encode_from_tokens_scheduled(tokens)
    assert cond[0][0].shape == (1, len(tokens["qwen3_4b"][0]), 2560)
    assert cond[0][1]["attention_mask"].shape == (1, len(tokens["qwen3_4b"][0]))


def test_diffusers_named_lora_reaches_the_fused_qkv():
    """Z-Image LoRAs trained on diffusers' layout patch slices of ``qkv`` and the renamed ``out``."""
    from comfy_kernel_core_nodes.model.lora import load_lora, model_lora_keys_unet

    model = load_diffusion_model(str(z_image_bf16())).model
    key_map = model_lora_keys_unet(model)
    qkv = "diffusion_model.layers.0.attention.qkv.weight"
    down, up = torch.zeros(2, 3840), torch.zeros(3840, 2)
    lora = {}
    for proj in ("to_q", "to_k", "to_v", "to_out.0"):
        name = f"transformer.layers.0.attention.{proj}"
        lora.update({f"{name}.lora_A.weight": down, f"{name}.lora_B.weight": up})
    lora.update({"lycoris_noise_refiner_0_feed_forward_w1.lora_down.weight": down,
                 "lycoris_noise_refiner_0_feed_forward_w1.lora_up.weight": torch.zeros(10240, 2)})
    patches = load_lora(lora, key_map, log_missing=False)
    assert set(patches) == {(qkv, (0, 0, 3840)), (qkv, (0, 3840, 3840)), (qkv, (0, 7680, 3840)),
                            "diffusion_model.layers.0.attention.out.weight",
                            "diffusion_model.noise_refiner.0.feed_forward.w1.weight"}
