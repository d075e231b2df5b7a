"""HunyuanVideo 1.5: the transformer and VAE against diffusers, the released files' layouts detected, the text
encoders, the latent upsamplers and the family's nodes.

diffusers is a test-only oracle (the ``test`` extra). Forward passes run small
configurations of the same code paths in fp32 (to 1e-4 relative); detection and
loading read the random-weight files of _files_hunyuan_video15.py.
"""

from __future__ import annotations

import re

import pytest
import torch
from _files_hunyuan_video15 import (
    VAE_CHANNELS,
    byt5_file,
    original_key,
    qwen_file,
    transformer_config,
    transformer_file,
    upsampler_file,
    vae_file,
)
from _oracle import close, randomize

from comfy_kernel_core_nodes.families.hunyuan_video15 import nodes as hv_nodes
from comfy_kernel_core_nodes.families.hunyuan_video15.models import transformer_layout
from comfy_kernel_core_nodes.families.hunyuan_video15.text import (
    ByteTokenizer,
    HunyuanVideo15Tokenizer,
    quoted_text,
)
from comfy_kernel_core_nodes.families.hunyuan_video15.transformer import HunyuanVideo15Transformer, module_key
from comfy_kernel_core_nodes.families.hunyuan_video15.upsampler import load_latent_upsampler
from comfy_kernel_core_nodes.families.hunyuan_video15.vae import HunyuanVideo15VAENet
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_clip, load_diffusion_model, load_vae, model_config

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

#: ComfyUI module name patterns -> diffusers' HunyuanVideo15Transformer3DModel names (q/k/v and the final
#: modulation are split / reordered in :func:`to_diffusers`)
REFINER = r"^txt_in\.individual_token_refiner\.blocks\.(\d+)\."
DOUBLE = r"^double_blocks\.(\d+)\."
RENAMES = [
    (r"^img_in\.proj\.", "x_embedder.proj."),
    (r"^time_in\.in_layer\.", "time_embed.timestep_embedder.linear_1."),
    (r"^time_in\.out_layer\.", "time_embed.timestep_embedder.linear_2."),
    (r"^txt_in\.input_embedder\.", "context_embedder.proj_in."),
    (r"^txt_in\.t_embedder\.in_layer\.", "context_embedder.time_text_embed.timestep_embedder.linear_1."),
    (r"^txt_in\.t_embedder\.out_layer\.", "context_embedder.time_text_embed.timestep_embedder.linear_2."),
    (r"^txt_in\.c_embedder\.in_layer\.", "context_embedder.time_text_embed.text_embedder.linear_1."),
    (r"^txt_in\.c_embedder\.out_layer\.", "context_embedder.time_text_embed.text_embedder.linear_2."),
    (REFINER + r"self_attn\.proj\.", r"context_embedder.token_refiner.refiner_blocks.\1.attn.to_out.0."),
    (REFINER + r"mlp\.0\.", r"context_embedder.token_refiner.refiner_blocks.\1.ff.net.0.proj."),
    (REFINER + r"mlp\.2\.", r"context_embedder.token_refiner.refiner_blocks.\1.ff.net.2."),
    (REFINER + r"adaLN_modulation\.1\.", r"context_embedder.token_refiner.refiner_blocks.\1.norm_out.linear."),
    (REFINER + r"(norm1|norm2)\.", r"context_embedder.token_refiner.refiner_blocks.\1.\2."),
    (DOUBLE + r"img_mod\.lin\.", r"transformer_blocks.\1.norm1.linear."),
    (DOUBLE + r"txt_mod\.lin\.", r"transformer_blocks.\1.norm1_context.linear."),
    (DOUBLE + r"img_attn\.norm\.query_norm\.scale", r"transformer_blocks.\1.attn.norm_q.weight"),
    (DOUBLE + r"img_attn\.norm\.key_norm\.scale", r"transformer_blocks.\1.attn.norm_k.weight"),
    (DOUBLE + r"txt_attn\.norm\.query_norm\.scale", r"transformer_blocks.\1.attn.norm_added_q.weight"),
    (DOUBLE + r"txt_attn\.norm\.key_norm\.scale", r"transformer_blocks.\1.attn.norm_added_k.weight"),
    (DOUBLE + r"img_attn\.proj\.", r"transformer_blocks.\1.attn.to_out.0."),
    (DOUBLE + r"txt_attn\.proj\.", r"transformer_blocks.\1.attn.to_add_out."),
    (DOUBLE + r"img_mlp\.0\.", r"transformer_blocks.\1.ff.net.0.proj."),
    (DOUBLE + r"img_mlp\.2\.", r"transformer_blocks.\1.ff.net.2."),
    (DOUBLE + r"txt_mlp\.0\.", r"transformer_blocks.\1.ff_context.net.0.proj."),
    (DOUBLE + r"txt_mlp\.2\.", r"transformer_blocks.\1.ff_context.net.2."),
    (r"^final_layer\.linear\.", "proj_out."),
    (r"^byt5_in\.layernorm\.", "context_embedder_2.norm."), (r"^byt5_in\.fc(\d)\.", r"context_embedder_2.linear_\1."),
    (r"^vision_in\.proj\.0\.", "image_embedder.norm_in."), (r"^vision_in\.proj\.1\.", "image_embedder.linear_1."),
    (r"^vision_in\.proj\.3\.", "image_embedder.linear_2."), (r"^vision_in\.proj\.4\.", "image_embedder.norm_out."),
    (r"^cond_type_embedding\.", "cond_type_embed."),
]


def to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if m := re.match(REFINER + r"self_attn\.qkv\.(\w+)$", key):
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3), strict=True):
                out[f"context_embedder.token_refiner.refiner_blocks.{m[1]}.attn.{name}.{m[2]}"] = part
        elif m := re.match(DOUBLE + r"(img|txt)_attn\.qkv\.(\w+)$", key):
            names = ("to_q", "to_k", "to_v") if m[2] == "img" else ("add_q_proj", "add_k_proj", "add_v_proj")
            for name, part in zip(names, value.chunk(3), strict=True):
                out[f"transformer_blocks.{m[1]}.attn.{name}.{m[3]}"] = part
        elif key.startswith("final_layer.adaLN_modulation.1."):  # (shift, scale) -> diffusers' (scale, shift)
            shift, scale = value.chunk(2)
            out["norm_out.linear." + key.rsplit(".", 1)[1]] = torch.cat([scale, shift])
        else:
            (new,) = [re.sub(p, r, key) for p, r in RENAMES if re.match(p, key)]
            out[new] = value
    return out


@pytest.fixture(scope="module")
def transformers_pair():
    ours = HunyuanVideo15Transformer(transformer_config("t2v")).eval()
    sd = randomize(ours)
    ref = diffusers.HunyuanVideo15Transformer3DModel(num_attention_heads=2, attention_head_dim=128, num_layers=2)
    ref.load_state_dict(to_diffusers(sd), strict=True)
    return ours, ref.eval()


@pytest.mark.parametrize("with_image", [False, True])
def test_transformer_matches_diffusers(transformers_pair, with_image):
    """Qwen + byT5 tokens, and with SigLIP tokens (I2V); diffusers masks all-zero image tokens out (T2V)."""
    ours, ref = transformers_pair
    torch.manual_seed(1)
    x = torch.randn(1, 65, 2, 4, 6)
    t = torch.tensor([700.0])
    context, byt5, image = torch.randn(1, 7, 3584), torch.randn(1, 5, 1472), torch.randn(1, 9, 1152)
    ones = lambda n: torch.ones(1, n, dtype=torch.long)  # noqa: E731
    with torch.no_grad():
        out = ours(x, t, context, txt_byt5=byt5, clip_fea=image if with_image else None)
        expected = ref(x, t, context, ones(7), encoder_hidden_states_2=byt5, encoder_attention_mask_2=ones(5),
                       image_embeds=image if with_image else torch.zeros_like(image), return_dict=False)[0]
    close(out, expected)


def test_transformer_double_block_patch_is_called(transformers_pair):
    ours, _ = transformers_pair
    seen = []

    def patch(args, extra):
        seen.append(args["img"].shape)
        return extra["original_block"](args)

    options = {"patches_replace": {"dit": {("double_block", 1): patch}}}
    x = torch.randn(1, 65, 1, 2, 2)
    with torch.no_grad():
        plain = ours(x, torch.tensor([500.0]), torch.randn(1, 3, 3584))
        torch.manual_seed(0)
        patched = ours(x, torch.tensor([500.0]), torch.randn(1, 3, 3584), transformer_options=options)
    assert seen == [torch.Size([1, 4, 256])] and patched.shape == plain.shape == (1, 32, 1, 2, 2)


def _vae_to_diffusers(key: str) -> str:
    key = re.sub(r"^(encoder|decoder)\.(down|up)\.(\d+)\.block\.", r"\1.\2_blocks.\3.resnets.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key)
    key = re.sub(r"^decoder\.up\.(\d+)\.upsample\.", r"decoder.up_blocks.\1.upsamplers.0.", key)
    key = key.replace("nin_shortcut.conv.", "conv_shortcut.")
    key = key.replace("mid.block_1.", "mid_block.resnets.0.").replace("mid.block_2.", "mid_block.resnets.1.")
    for ours, theirs in (("q", "to_q"), ("k", "to_k"), ("v", "to_v")):
        key = key.replace(f"mid.attn_1.{ours}.", f"mid_block.attentions.0.{theirs}.")
    return key.replace("mid.attn_1.", "mid_block.attentions.0.")


@pytest.mark.parametrize("frames", [1, 9, 17])
def test_vae_matches_diffusers(frames):
    """Encoding and decoding in chunks with carried frames equals diffusers' whole-clip pass."""
    ours = HunyuanVideo15VAENet(channels=VAE_CHANNELS).eval()
    sd = randomize(ours)
    ref = diffusers.AutoencoderKLHunyuanVideo15(block_out_channels=VAE_CHANNELS).eval()
    ref.load_state_dict({_vae_to_diffusers(k): v for k, v in sd.items()}, strict=True)
    torch.manual_seed(2)
    clip = torch.rand(1, 3, frames, 32, 32) * 2 - 1
    latent = torch.randn(1, 32, (frames - 1) // 4 + 1, 2, 2)
    with torch.no_grad():
        encoded = ours.encoder(clip)
        close(encoded, ref.encode(clip).latent_dist.mean)
        decoded = ours.decoder(latent)
        close(decoded, ref.decode(latent).sample)
    assert encoded.shape == latent.shape and decoded.shape == clip.shape


def test_original_and_comfy_key_layouts_map_to_the_module():
    with torch.device("meta"):
        names = set(HunyuanVideo15Transformer(transformer_config("sr")).state_dict())
    originals = {original_key(k) for k in names}
    assert "double_blocks.0.img_attn_qkv.weight" in originals and "txt_in.c_embedder.linear_1.weight" in originals
    assert {module_key(k) for k in originals} == names == {module_key(k) for k in names}


@pytest.mark.parametrize("kind, config, in_channels", [("t2v", "HunyuanVideo15", 65),
                                                       ("sr", "HunyuanVideo15SR", 98)])
def test_transformer_files_are_detected_with_every_key(kind, config, in_channels):
    path = transformer_file(kind)
    found, prefix = model_config(str(path))
    assert type(found).__name__ == config and prefix == ""
    unet = found.unet_config
    assert (unet["in_channels"], unet["out_channels"], unet["vision_in_dim"], unet["byt5"],
            unet["use_cond_type_embedding"], unet["meanflow"]) == (in_channels, 32, 1152, True, True, kind == "sr")
    assert found.sampling_settings["shift"] == (2.0 if kind == "sr" else 7.0)
    with torch.device("meta"):
        expected = set(HunyuanVideo15Transformer(transformer_layout(unet)).state_dict())
    assert {module_key(k) for k in tensor_shapes(str(path))} == expected
    patcher = load_diffusion_model(str(path))
    assert patcher.model.weights.keys == frozenset(expected)
    with patcher.use() as model:
        assert type(model.diffusion_model).__name__ == "HunyuanVideo15Transformer"


def test_vae_file_is_detected_and_round_trips_shapes():
    vae = load_vae(str(vae_file()))
    assert type(vae).__name__ == "HunyuanVideo15VAE"
    assert (vae.latent_channels, vae.downscale_ratio, vae.temporal_compression_decode()) == (32, 16, 4)
    assert set(vae.get_sd()) == {k if "nin_shortcut" not in k else k for k in tensor_shapes(str(vae_file()))}
    frames = torch.rand(5, 64, 48, 3)
    latent = vae.encode(frames)
    assert latent.shape == (1, 32, 2, 4, 3)
    video = vae.decode(latent)
    assert video.shape == (1, 5, 64, 48, 3) and 0.0 <= float(video.min()) and float(video.max()) <= 1.0


def test_byte_tokenizer_and_quoted_text():
    assert ByteTokenizer().encode("Hé") == [72 + 3, 0xC3 + 3, 0xA9 + 3]
    assert ByteTokenizer().decode(ByteTokenizer().encode("glyph é")) == "glyph é"
    assert quoted_text('a sign saying "OPEN" and “营业”') == 'Text "OPEN". Text "营业". '
    assert quoted_text("no quotes here") is None
    tokenizer = HunyuanVideo15Tokenizer()
    tokens = tokenizer.tokenize_with_weights('a neon sign "HI"')
    assert [t for t, _ in tokens["byt5"][0]] == ByteTokenizer().encode('Text "HI". ') + [1]
    assert "byt5" not in tokenizer.tokenize_with_weights("a cat")
    empty = [t for t, _ in tokenizer.tokenize_with_weights("")["qwen25_7b"][0]]
    space = [t for t, _ in tokenizer.tokenize_with_weights(" ")["qwen25_7b"][0]]
    assert empty == space


@pytest.fixture(scope="module")
def clip():
    return load_clip([str(byt5_file()), str(qwen_file())], "hunyuan_video_15")


def test_dual_clip_encodes_qwen_states_and_byt5_glyphs(clip):
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a cat"), return_pooled=True)
    # from the user's turn on: "a", " cat", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"
    assert cond.shape == (1, 7, 3584) and pooled is None
    out = clip.encode_from_tokens(clip.tokenize('a shop sign "OPEN"'), return_dict=True)
    assert out["conditioning_byt5small"].shape == (1, len('Text "OPEN". ') + 1, 1472)
    assert torch.isfinite(out["cond"]).all() and torch.isfinite(out["conditioning_byt5small"]).all()
    assert {k.split(".")[0] for k in clip.cond_stage_model.state_dict_keys()} == {"qwen25_7b", "byt5_small"}


def test_dual_clip_rejects_other_files(tmp_path):
    from comfy_kernel_core_nodes.model.loading import UnsupportedModel

    with pytest.raises(UnsupportedModel, match="hunyuan_video_15"):
        load_clip([str(byt5_file()), str(vae_file())], "hunyuan_video_15")


@pytest.mark.parametrize("kind", ["1080p", "720p"])
def test_latent_upsampler_files(kind):
    upsampler = load_latent_upsampler(str(upsampler_file(kind)))
    latent = torch.randn(1, 32, 2, 6, 5)
    out = upsampler.resample_latent(latent)
    assert out.shape == latent.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    node = hv_nodes.HunyuanVideo15LatentUpscaleWithModel.execute(upsampler, {"samples": latent}, "bilinear",
                                                                 128, 96, "disabled")
    assert node.result[0]["samples"].shape == (1, 32, 2, 6, 8)


def test_empty_latent_and_image_to_video_nodes():
    (latent,) = hv_nodes.EmptyHunyuanVideo15Latent.execute(96, 64, 9, 2).result
    assert latent["samples"].shape == (2, 32, 3, 4, 6)
    vae = load_vae(str(vae_file()))
    positive, negative = [[torch.zeros(1, 3, 8), {}]], [[torch.zeros(1, 3, 8), {"x": 1}]]
    pos, neg, out = hv_nodes.HunyuanVideo15ImageToVideo.execute(positive, negative, vae, 64, 64, 9, 1,
                                                                start_image=torch.rand(1, 48, 80, 3)).result
    assert out["samples"].shape == (1, 32, 3, 4, 4)
    concat, mask = pos[0][1]["concat_latent_image"], pos[0][1]["concat_mask"]
    assert concat.shape == (1, 32, 3, 4, 4) and concat[:, :, 0].abs().sum() > 0 and concat[:, :, 1:].abs().sum() == 0
    assert mask.shape == (1, 1, 3, 4, 4) and mask[:, :, 0].max() == 0 and mask[:, :, 1:].min() == 1
    assert neg[0][1]["x"] == 1 and neg[0][1]["concat_mask"] is mask


def test_super_resolution_node_layout():
    vae = load_vae(str(vae_file()))
    samples = torch.randn(1, 32, 2, 4, 4)
    pos, _, latent = hv_nodes.HunyuanVideo15SuperResolution.execute(
        [[torch.zeros(1, 3, 8), {}]], [[torch.zeros(1, 3, 8), {}]], {"samples": samples}, 0.7, vae=vae,
        start_image=torch.rand(1, 32, 32, 3)).result
    cond = pos[0][1]["concat_latent_image"]
    assert cond.shape == (1, 66, 2, 4, 4) and pos[0][1]["noise_augmentation"] == 0.7
    assert torch.equal(cond[:, 33:65], samples) and (cond[:, 65] == 1).all()
    assert (cond[:, 32, 0] == 1).all() and (cond[:, 32, 1] == 0).all() and cond[:, :32, 0].abs().sum() > 0
    assert latent["samples"] is samples


def test_siglip_matches_transformers():
    """The SigLIP image encoder (no class token, no pre-norm, normed last state) against transformers'."""
    from dataclasses import replace

    import transformers

    from comfy_kernel_core_nodes.components.clip_vision import SIGLIP_384, CLIPVisionModel

    cfg = replace(SIGLIP_384, width=64, layers=3, heads=4, mlp_width=96, image_size=56)
    ours = CLIPVisionModel(cfg).eval()
    sd = randomize(ours)
    ref = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, image_size=56,
        patch_size=14, layer_norm_eps=1e-6, vision_use_head=False)).eval()
    names = set(ref.state_dict())
    ref.load_state_dict({k if k in names else k.removeprefix("vision_model."): v for k, v in sd.items()}, strict=True)
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        last, penultimate, embeds = ours(pixels)
        expected = ref(pixel_values=pixels, output_hidden_states=True)
    close(last, expected.last_hidden_state)
    close(penultimate, expected.hidden_states[-2])
    assert embeds is last and last.shape == (2, 16, 64)


def test_siglip_file_is_detected():
    from _files_hunyuan_video15 import siglip_file

    from comfy_kernel_core_nodes.model.clip_vision import load

    model = load(str(siglip_file()))
    assert model.config.name == "siglip_384" and model.image_mean == [0.5, 0.5, 0.5]
    out = model.encode_image(torch.rand(1, 40, 60, 3))
    assert out.last_hidden_state.shape == (1, 729, 1152) and out.penultimate_hidden_states.shape == (1, 729, 1152)


def test_model_conditioning_inputs():
    """I2V: scaled start latents + inverted keep-mask as the 33 extra channels, SigLIP's last state as clip_fea,
    byT5 as txt_byt5; SR: the 66-channel layout with the low-resolution part noise-augmented per seed."""
    from comfy_kernel_core_nodes.model.clip_vision import Output

    model = load_diffusion_model(str(transformer_file("t2v"))).model
    noise = torch.randn(1, 32, 3, 4, 4)
    image = torch.randn(1, 32, 3, 4, 4)
    mask = torch.ones(1, 1, 3, 4, 4)
    mask[:, :, 0] = 0
    vision = Output()
    vision["last_hidden_state"] = torch.randn(1, 729, 1152)
    out = model.extra_conds(noise=noise, device="cpu", concat_latent_image=image, concat_mask=mask,
                            clip_vision_output=vision, conditioning_byt5small=torch.randn(1, 4, 1472),
                            cross_attn=torch.randn(1, 7, 3584))
    concat = out["c_concat"].cond
    assert concat.shape == (1, 33, 3, 4, 4)
    assert torch.allclose(concat[:, :32], image * 1.03682) and torch.equal(concat[:, 32:], 1.0 - mask)
    assert out["clip_fea"].cond is vision.last_hidden_state and out["txt_byt5"].cond.shape == (1, 4, 1472)
    assert torch.equal(model.extra_conds(noise=noise, device="cpu")["c_concat"].cond, torch.zeros(1, 33, 3, 4, 4))

    sr = load_diffusion_model(str(transformer_file("sr"))).model
    cond = torch.randn(1, 66, 3, 4, 4)
    first = sr.extra_conds(noise=noise, device="cpu", concat_latent_image=cond, noise_augmentation=0.7, seed=5)
    again = sr.extra_conds(noise=noise, device="cpu", concat_latent_image=cond, noise_augmentation=0.7, seed=5)
    plain = sr.extra_conds(noise=noise, device="cpu", concat_latent_image=cond, noise_augmentation=0.0)
    a, b, c = first["c_concat"].cond, again["c_concat"].cond, plain["c_concat"].cond
    assert torch.equal(a, b) and torch.equal(a[:, :33], cond[:, :33]) and torch.equal(a[:, 65:], cond[:, 65:])
    assert not torch.allclose(a[:, 33:65], c[:, 33:65]) and torch.allclose(c[:, 33:65], 0.75 * cond[:, 33:65])
    assert first["disable_time_r"].cond is False and out["disable_time_r"].cond is True


def test_super_resolution_meanflow_uses_the_next_sigma():
    """``time_r_in`` embeds the schedule's next sigma (x1000) and is averaged in, unless disable_time_r."""
    net = HunyuanVideo15Transformer(transformer_config("sr")).eval()
    randomize(net)
    x, context = torch.randn(1, 98, 1, 2, 2), torch.randn(1, 3, 3584)
    schedule = torch.tensor([1.0, 0.6, 0.0])
    options = lambda: {"sigmas": torch.tensor([0.6]), "sample_sigmas": schedule}  # noqa: E731
    with torch.no_grad():
        t = torch.tensor([600.0])
        plain = net(x, t, context, disable_time_r=True, transformer_options=options())
        mean = net(x, t, context, transformer_options=options())
        vec = net.vector(t, None, torch.float32, options(), False)
        expected = (net.time_in(_embed(t, 1.0)) + net.time_r_in(_embed(torch.tensor([0.0]), 1000.0))) / 2
    assert not torch.allclose(plain, mean)
    close(vec, expected)


def _embed(t: torch.Tensor, factor: float) -> torch.Tensor:
    from comfy_kernel_core_nodes.families.flux.layers import timestep_embedding

    return timestep_embedding(t, 256, time_factor=factor)


def test_fp8_weights_stay_fp8_and_match_fp16():
    x, t = torch.randn(1, 65, 2, 2, 2), torch.tensor([500.0])
    context, byt5, image = torch.randn(1, 4, 3584), torch.randn(1, 3, 1472), torch.randn(1, 5, 1152)
    outs = []
    for options in ({}, {"dtype": torch.float8_e4m3fn}):
        with load_diffusion_model(str(transformer_file("t2v")), options).use() as model:
            net = model.diffusion_model
            with torch.no_grad():
                outs.append(net(x, t, context, txt_byt5=byt5, clip_fea=image))
            kinds = {net.double_blocks[0].img_attn.qkv.weight.dtype, net.cond_type_embedding.weight.dtype}
    assert kinds == {torch.float8_e4m3fn}
    close(outs[1], outs[0], rtol=0.1)


def test_detection_of_other_layouts_and_unsupported_relatives():
    """ComfyUI's module names under a checkpoint prefix are detected too; a HunyuanVideo 1.0-style file
    (no vision_in, no cond_type_embedding) is recognised but has no model config."""
    from comfy_kernel_core_nodes.families.hunyuan_video15.detect import transformer_config as detect
    from comfy_kernel_core_nodes.model.detection import model_config_from

    prefix = "model.diffusion_model."
    shapes = {prefix + module_key(k): v for k, v in tensor_shapes(str(transformer_file("t2v"))).items()}
    assert type(model_config_from(shapes, prefix)).__name__ == "HunyuanVideo15"
    older = {k: v for k, v in shapes.items() if not k.startswith((prefix + "vision_in.", prefix + "cond_type"))}
    assert detect(older, prefix)["vision_in_dim"] is None and model_config_from(older, prefix) is None
