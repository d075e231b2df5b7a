"""Qwen-Image / Qwen-Image-Edit: networks against diffusers, detection of ComfyUI's files, the text encoder.

diffusers is a test-only oracle (the ``test`` extra). Forward passes run small
configurations of the same code paths in fp32 (to 1e-4 relative); the
detection tests read random-weight files in the released layouts (see
_files_qwen.py), with the real widths and one block.
"""

from __future__ import annotations

import re

import pytest
import torch
from _files_qwen import qwen25_vl_fp8_scaled, qwen_image_fp8, wan21_vae
from _oracle import close, randomize

from comfy_kernel_core_nodes.components.llm.tokenizer import IMAGE_PAD, qwen_tokenizer
from comfy_kernel_core_nodes.components.wan_vae import WanVAE
from comfy_kernel_core_nodes.families.qwen_image.text import TEMPLATE, QwenImageTokenizer, template_end
from comfy_kernel_core_nodes.families.qwen_image.transformer import QwenImageConfig, QwenImageTransformer
from comfy_kernel_core_nodes.model import detection
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_clip, load_diffusion_model, load_vae, model_config

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")


# -- the transformer ----------------------------------------------------------------------------

SMALL = dict(in_channels=16, out_channels=4, num_layers=2, attention_head_dim=32, num_attention_heads=2,
             joint_attention_dim=24, axes_dims_rope=(8, 12, 12))


def _pack(latent: torch.Tensor) -> torch.Tensor:
    b, c, _, h, w = latent.shape
    return latent[:, :, 0].view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * 4)


@pytest.mark.parametrize("case", ["text_to_image", "edit_index", "edit_2511_timestep_zero"])
def test_transformer_matches_diffusers(case):
    zero = case == "edit_2511_timestep_zero"
    ours = QwenImageTransformer(QwenImageConfig(**SMALL, default_ref_method="index_timestep_zero" if zero
                                                else "index")).eval()
    sd = randomize(ours)
    ref = diffusers.QwenImageTransformer2DModel(patch_size=2, zero_cond_t=zero, **SMALL).eval()
    ref.load_state_dict(sd)
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, 1, 8, 12, generator=g), torch.randn(2, 7, 24, generator=g)
    sigma = torch.tensor([0.7, 0.3])
    refs = [torch.randn(2, 4, 1, 8, 12, generator=g)] if case != "text_to_image" else None
    with torch.no_grad():
        out = ours(x, sigma, context, ref_latents=refs)
        tokens = torch.cat([_pack(x)] + [_pack(r) for r in refs or []], dim=1)
        shapes = [[(1, 4, 6)] * (1 + len(refs or []))] * 2
        expected = ref(hidden_states=tokens, encoder_hidden_states=context, timestep=sigma, img_shapes=shapes,
                       return_dict=False)[0][:, :24]
    expected = expected.view(2, 4, 6, 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(2, 4, 8, 12).unsqueeze(2)
    assert out.shape == x.shape
    close(out, expected)


def test_transformer_patch_points_are_called():
    ours = QwenImageTransformer(QwenImageConfig(**SMALL)).eval()
    randomize(ours)
    seen = []

    def replace(args, extra):
        seen.append(("replace", sorted(args)))
        return extra["original_block"](args)

    def after(args):
        seen.append(("patch", args["block_index"]))
        return {"img": args["img"], "txt": args["txt"]}

    options = {"patches_replace": {"dit": {("double_block", 1): replace}}, "patches": {"double_block": [after]}}
    x = torch.randn(1, 4, 1, 8, 8)
    with torch.no_grad():
        plain = ours(x, torch.tensor([0.5]), torch.randn(1, 3, 24, generator=torch.Generator().manual_seed(2)))
        patched = ours(x, torch.tensor([0.5]), torch.randn(1, 3, 24, generator=torch.Generator().manual_seed(2)),
                       transformer_options=options)
    assert seen == [("patch", 0), ("replace", ["img", "pe", "transformer_options", "txt", "vec"]), ("patch", 1)]
    assert torch.equal(plain, patched)


# -- the VAE ------------------------------------------------------------------------------------

def _wan_to_diffusers(key: str) -> str:
    k = re.sub(r"^conv1\.", "quant_conv.", key)
    k = re.sub(r"^conv2\.", "post_quant_conv.", k)
    for part in ("encoder", "decoder"):
        k = k.replace(f"{part}.conv1.", f"{part}.conv_in.").replace(f"{part}.head.0.", f"{part}.norm_out.")
        k = k.replace(f"{part}.head.2.", f"{part}.conv_out.").replace(f"{part}.middle.1.",
                                                                      f"{part}.mid_block.attentions.0.")
        k = k.replace(f"{part}.middle.0.", f"{part}.mid_block.resnets.0.").replace(
            f"{part}.middle.2.", f"{part}.mid_block.resnets.1.")
    k = k.replace("encoder.downsamples.", "encoder.down_blocks.")
    m = re.match(r"decoder\.upsamples\.(\d+)\.(.*)", k)
    if m:
        level, j = divmod(int(m.group(1)), 4)
        k = f"decoder.up_blocks.{level}." + (f"resnets.{j}." if j < 3 else "upsamplers.0.") + m.group(2)
    for ours, theirs in (("residual.0.", "norm1."), ("residual.2.", "conv1."), ("residual.3.", "norm2."),
                         ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut.")):
        k = k.replace(ours, theirs)
    return k


@pytest.mark.parametrize("frames", [1, 5])
def test_wan_vae_matches_diffusers(frames):
    ours = WanVAE(dim=16, z_dim=4).eval()
    sd = randomize(ours, 3)
    with torch.no_grad():
        ours.decoder.head[2].weight.mul_(0.3)  # keep decoded values inside [-1, 1], where diffusers clamps
    ref = diffusers.AutoencoderKLWan(base_dim=16, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                     temperal_downsample=[False, True, True]).eval()
    ref.load_state_dict({_wan_to_diffusers(k): v for k, v in ours.state_dict().items()})
    assert len(sd) == len(ref.state_dict())
    x = torch.rand(1, 3, frames, 32, 48, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        close(z, ref.encode(x).latent_dist.mean)
        assert z.shape == (1, 4, 1 + (frames - 1) // 4, 4, 6)
        decoded = ours.decode(z)
        expected = ref.decode(z).sample
    assert decoded.shape == x.shape and decoded.abs().max() < 1
    close(decoded, expected)


# -- files in ComfyUI's layouts -----------------------------------------------------------------

def test_transformer_file_is_detected_with_every_key():
    path = str(qwen_image_fp8())
    config, prefix = model_config(path)
    assert type(config).__name__ == "QwenImage" and prefix == ""
    assert config.unet_config["num_layers"] == 1 and config.unet_config["in_channels"] == 64
    assert config.sampling_settings == {"multiplier": 1.0, "shift": 1.15}
    patcher = load_diffusion_model(path)
    weights = patcher.model.weights
    with torch.device("meta"):
        expected = set(QwenImageTransformer(QwenImageConfig(num_layers=1)).state_dict())
    assert set(weights.keys) == expected
    assert weights.dtype() == torch.float8_e4m3fn  # the file's fp8 stays fp8
    sd = weights.read("cpu")
    assert set(sd) == expected and sd["img_in.weight"].dtype == torch.float8_e4m3fn


def test_checkpoint_layout_is_detected():
    shapes = {"model.diffusion_model." + k: v for k, v in tensor_shapes(str(qwen_image_fp8())).items()}
    shapes.update({"text_encoders.qwen25_7b.transformer." + k: v
                   for k, v in tensor_shapes(str(qwen25_vl_fp8_scaled())).items()})
    shapes.update({"vae." + k: v for k, v in tensor_shapes(str(wan21_vae())).items()})
    assert detection.diffusion_prefix(shapes) == "model.diffusion_model."
    config = detection.model_config_from(shapes, "model.diffusion_model.")
    assert type(config).__name__ == "QwenImage"
    assert detection.vae_kind(shapes, "vae.").name == "wan21"
    assert detection.text_encoder_kind(shapes)[0].name == "qwen25_7b"


def test_edit_2511_marker_selects_timestep_zero():
    shapes = dict(tensor_shapes(str(qwen_image_fp8())))
    shapes["__index_timestep_zero__"] = (0,)
    config = detection.model_config_from(shapes, "")
    assert config.unet_config["default_ref_method"] == "index_timestep_zero"


def test_vae_file_round_trip():
    vae = load_vae(str(wan21_vae()))
    assert vae.latent_channels == 16 and vae.latent_dim == 3
    image = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(5))
    latent = vae.encode(image)
    assert latent.shape == (1, 16, 1, 8, 6)
    decoded = vae.decode(latent)
    assert decoded.shape == (1, 1, 64, 48, 3) and 0 <= decoded.min() and decoded.max() <= 1


# -- the text encoder ---------------------------------------------------------------------------

def test_template_and_its_cut_match_comfyui():
    tokens = QwenImageTokenizer().tokenize_with_weights("a red fox")["qwen25_7b"][0]
    ids = [t for t, _ in tokens]
    assert ids == qwen_tokenizer().encode(TEMPLATE.format("a red fox"))
    start = template_end(tokens)
    # the conditioning starts after "<|im_start|>user\n": 34 template tokens, then the prompt
    assert start == 34 and qwen_tokenizer().decode(ids[start:start + 3]) == "a red fox"
    raw = QwenImageTokenizer().tokenize_with_weights("<|im_start|>user\nhi<|im_end|>")["qwen25_7b"][0]
    assert [t for t, _ in raw] == qwen_tokenizer().encode("<|im_start|>user\nhi<|im_end|>")


def test_text_encoder_file_encodes_text_and_images():
    clip = load_clip([str(qwen25_vl_fp8_scaled())], "qwen_image")
    keys = clip.cond_stage_model.state_dict_keys()
    assert "qwen25_7b.transformer.model.layers.0.self_attn.k_proj.bias" in keys
    assert "qwen25_7b.transformer.visual.merger.mlp.2.weight" in keys
    assert not any(k.endswith(("scale_weight", "scaled_fp8")) for k in keys)
    tokens = clip.tokenize("a red fox")
    cond = clip.encode_from_tokens_scheduled(tokens)
    assert cond[0][0].shape == (1, len(tokens["qwen25_7b"][0]) - 34, 3584)
    assert torch.isfinite(cond[0][0]).all() and "attention_mask" not in cond[0][1]
    image = torch.rand(1, 56, 84, 3, generator=torch.Generator().manual_seed(6))
    tokens = clip.tokenize("make it blue", images=[image])
    pad = [i for i, (t, _) in enumerate(tokens["qwen25_7b"][0]) if isinstance(t, dict)]
    assert len(pad) == 1 and IMAGE_PAD not in [t for t, _ in tokens["qwen25_7b"][0] if isinstance(t, int)]
    with_image = clip.encode_from_tokens_scheduled(tokens)[0][0]
    # a 56x84 image is 4x6 patches of 14 pixels, merged 2x2: 6 tokens instead of the placeholder
    assert with_image.shape[1] == len(tokens["qwen25_7b"][0]) - 1 + 6 - template_end(tokens["qwen25_7b"][0])


def test_lora_names_of_trainers_reach_the_transformer():
    """Qwen-Image LoRAs come with bare diffusers names (Qwen-Image-Lightning), ``transformer.`` or
    ``diffusion_model.`` prefixes, or LyCORIS names; each reaches the same weight."""
    from comfy_kernel_core_nodes.model.lora import load_lora, model_lora_keys_unet

    model = load_diffusion_model(str(qwen_image_fp8())).model
    key_map = model_lora_keys_unet(model)
    target = "diffusion_model.transformer_blocks.0.attn.to_q.weight"
    down, up = torch.zeros(2, 3072), torch.zeros(3072, 2)
    for name in ("transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.to_q",
                 "diffusion_model.transformer_blocks.0.attn.to_q", "lycoris_transformer_blocks_0_attn_to_q"):
        lora = {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(2.0)}
        assert set(load_lora(lora, key_map, log_missing=False)) == {target}, name
