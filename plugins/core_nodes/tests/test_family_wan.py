"""Wan 2.1 / 2.2: networks against diffusers / transformers, ComfyUI's files detected, umt5, the Wan nodes.

diffusers and transformers are test-only oracles (the ``test`` extra). Forward
passes run small configurations of the same code paths in fp32 (to 1e-4
relative); detection reads the random-weight files of _files_wan.py.
"""

from __future__ import annotations

import re

import pytest
import torch
from _files_wan import (
    lora_file,
    spiece_model,
    transformer_file,
    umt5_config,
    umt5_file,
    vae21_file,
    vae22_file,
)
from _oracle import close, randomize

from comfy_kernel_core_nodes.components.t5 import T5Encoder
from comfy_kernel_core_nodes.components.wan_vae import WanVAE22
from comfy_kernel_core_nodes.families.wan.detect import transformer_config as detect_config
from comfy_kernel_core_nodes.families.wan.models import transformer_layout
from comfy_kernel_core_nodes.families.wan.text import SentencePieceTokenizer
from comfy_kernel_core_nodes.families.wan.transformer import WanConfig, WanTransformer
from comfy_kernel_core_nodes.model import ops
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_clip, load_diffusion_model, load_vae, model_config

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

SMALL = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64)


def _diffusers_transformer(cfg: WanConfig, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    image = cfg.model_type == "i2v"
    ref = diffusers.WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=cfg.eps, image_dim=1280 if image else None, added_kv_proj_dim=cfg.dim if image else None)
    ref.load_state_dict(convert_wan_transformer_to_diffusers(dict(sd)), strict=True)
    return ref.eval()


@pytest.mark.parametrize("kind", ["t2v", "i2v", "ti2v"])
def test_transformer_matches_diffusers(kind):
    cfg = {"t2v": WanConfig(**SMALL), "i2v": WanConfig(model_type="i2v", in_dim=36, image_embedding=True, **SMALL),
           "ti2v": WanConfig(in_dim=48, out_dim=48, **SMALL)}[kind]
    ours = WanTransformer(cfg).eval()
    sd = randomize(ours)
    ref = _diffusers_transformer(cfg, sd)
    torch.manual_seed(1)
    x = torch.randn(1, cfg.in_dim, 3, 8, 10)
    context = torch.randn(1, 512, cfg.text_dim)  # diffusers takes the image tokens as what precedes 512 text ones
    clip = torch.randn(1, 257, 1280) if kind == "i2v" else None
    if kind == "ti2v":  # the 5B model: a timestep per latent frame (the start frame kept at 0)
        t_ours = torch.tensor([[0.0, 700.0, 700.0]])
        t_ref = t_ours.repeat_interleave(4 * 5, dim=1)
    else:
        t_ours = t_ref = torch.tensor([700.0])
    with torch.no_grad():
        ours_out = ours(x, t_ours, context, clip_fea=clip)
        ref_out = ref(x, t_ref, context, encoder_hidden_states_image=clip, return_dict=False)[0]
    close(ours_out, ref_out)


def test_vace_matches_diffusers():
    cfg = WanConfig(model_type="vace", vace_layers=1, vace_in_dim=96, **SMALL)
    ours = WanTransformer(cfg).eval()
    sd = randomize(ours)
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    ref = diffusers.WanVACETransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=16, out_channels=16, text_dim=cfg.text_dim, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=cfg.eps, vace_layers=[0],
        vace_in_channels=96).eval()
    ref.load_state_dict(convert_wan_transformer_to_diffusers(dict(sd)), strict=True)
    torch.manual_seed(2)
    x, context = torch.randn(1, 16, 2, 8, 8), torch.randn(1, 9, cfg.text_dim)
    control = torch.randn(1, 96, 2, 8, 8)
    t = torch.tensor([400.0])
    with torch.no_grad():
        ours_out = ours(x, t, context, vace_context=control[:, None], vace_strength=[0.7])
        ref_out = ref(x, t, context, control_hidden_states=control, control_hidden_states_scale=torch.tensor([0.7]),
                      return_dict=False)[0]
    close(ours_out, ref_out)


def test_transformer_patch_point_is_called():
    ours = WanTransformer(WanConfig(**SMALL)).eval()
    randomize(ours)
    seen = []

    def replace(args, extra):
        seen.append(sorted(args))
        out = extra["original_block"](args)
        return {"img": out["img"] * 0}

    x, context = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 5, 64)
    with torch.no_grad():
        plain = ours(x, torch.tensor([500.0]), context)
        options = {"patches_replace": {"dit": {("double_block", 1): replace}}}
        patched = ours(x, torch.tensor([500.0]), context, transformer_options=options)
    assert seen == [["img", "pe", "transformer_options", "txt", "vec"]]
    assert not torch.allclose(plain, patched)


def test_umt5_matches_transformers():
    transformers = pytest.importorskip("transformers")
    cfg = umt5_config()
    ours = T5Encoder(cfg, ops.plain).eval()
    sd = randomize(ours)
    ref = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.width, d_kv=64, d_ff=cfg.ff_width, num_layers=cfg.layers,
        num_heads=cfg.heads, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)).eval()
    ref.load_state_dict({**sd, "encoder.embed_tokens.weight": sd["shared.weight"]})
    ids = torch.randint(3, cfg.vocab_size, (1, 20))
    mask = torch.ones(1, 20, dtype=torch.long)
    mask[:, 14:] = 0
    with torch.no_grad():
        out, _ = ours(ours.embed([[(int(i), 1.0) for i in ids[0]]]), mask)
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    close(out[:, :14], expected[:, :14])


def _vae22_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    rules = [
        (r"^encoder\.downsamples\.(\d+)\.downsamples\.2\.", r"encoder.down_blocks.\1.downsampler."),
        (r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
        (r"^decoder\.upsamples\.(\d+)\.upsamples\.3\.", r"decoder.up_blocks.\1.upsampler."),
        (r"^decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2."),
        (r"\.middle\.0\.", ".mid_block.resnets.0."), (r"\.middle\.1\.", ".mid_block.attentions.0."),
        (r"\.middle\.2\.", ".mid_block.resnets.1."), (r"\.residual\.0\.", ".norm1."), (r"\.residual\.2\.", ".conv1."),
        (r"\.residual\.3\.", ".norm2."), (r"\.residual\.6\.", ".conv2."), (r"\.shortcut\.", ".conv_shortcut."),
        (r"^(encoder|decoder)\.conv1\.", r"\1.conv_in."), (r"^(encoder|decoder)\.head\.0\.", r"\1.norm_out."),
        (r"^(encoder|decoder)\.head\.2\.", r"\1.conv_out."), (r"^conv1\.", "quant_conv."),
        (r"^conv2\.", "post_quant_conv."),
    ]
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def test_wan22_vae_matches_diffusers():
    ours = WanVAE22(dim=16, dec_dim=32).eval()
    sd = randomize(ours)
    ref = diffusers.AutoencoderKLWan(base_dim=16, decoder_base_dim=32, z_dim=48, is_residual=True, in_channels=12,
                                     out_channels=12, patch_size=2, temperal_downsample=[False, True, True],
                                     scale_factor_spatial=16).eval()
    ref.load_state_dict(_vae22_to_diffusers(sd), strict=True)
    torch.manual_seed(3)
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    z = torch.randn(1, 48, 2, 2, 2)
    with torch.no_grad():
        close(ours.encode(x), ref.encode(x).latent_dist.mean)
        close(ours.decode(z).clamp(-1, 1), ref.decode(z).sample)  # diffusers clamps its output


@pytest.mark.parametrize("kind, config, model_type, in_dim, out_dim", [
    ("t2v", "Wan21T2V", "t2v", 16, 16), ("i2v", "Wan21I2V", "i2v", 36, 16), ("i2v22", "Wan21T2V", "t2v", 36, 16),
    ("ti2v", "Wan22T2V", "t2v", 48, 48), ("vace", "Wan21Vace", "vace", 16, 16)])
def test_transformer_files_are_detected_with_every_key(kind, config, model_type, in_dim, out_dim):
    path = transformer_file(kind)
    found, prefix = model_config(str(path))
    assert type(found).__name__ == config and prefix == ""
    assert (found.unet_config["model_type"], found.unet_config["in_dim"], found.unet_config["out_dim"]) == \
        (model_type, in_dim, out_dim)
    with torch.device("meta"):
        expected = set(WanTransformer(transformer_layout(found.unet_config)).state_dict())
    assert set(tensor_shapes(str(path))) == expected
    patcher = load_diffusion_model(str(path))
    assert patcher.model.weights.keys == frozenset(expected)
    with patcher.use() as model:
        assert type(model.diffusion_model).__name__ == "WanTransformer"


def test_detection_of_checkpoint_layout_and_the_animate_variant():
    shapes = {"model.diffusion_model." + k: v for k, v in tensor_shapes(str(transformer_file("t2v"))).items()}
    assert detect_config(shapes, "model.diffusion_model.")["model_type"] == "t2v"
    shapes["model.diffusion_model.face_adapter.fuser_blocks.0.k_norm.weight"] = (256,)
    assert detect_config(shapes, "model.diffusion_model.")["model_type"] == "animate"
    from comfy_kernel_core_nodes.model.detection import model_config_from

    # the variants' own tests: test_family_wan_animate.py, test_family_wan_s2v.py, test_family_wan_humo.py
    assert type(model_config_from(shapes, "model.diffusion_model.")).__name__ == "Wan22Animate"


def test_scaled_fp8_file_stays_fp8_and_matches_fp16():
    fp16 = load_diffusion_model(str(transformer_file("t2v")))
    fp8 = load_diffusion_model(str(transformer_file("t2v", fp8_scaled=True)))
    x, t, context = torch.randn(1, 16, 2, 4, 4), torch.tensor([600.0]), torch.randn(1, 7, 128)
    outs = []
    for patcher in (fp16, fp8):
        with patcher.use() as model:
            net = model.diffusion_model
            with torch.no_grad():
                outs.append(net(x, t, context))
            if patcher is fp8:
                assert net.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    close(outs[1], outs[0], rtol=0.1)


def test_umt5_file_tokenizes_with_its_own_model_and_zeroes_padding():
    clip = load_clip([str(umt5_file())], "wan")
    tokens = clip.tokenize("a cat walks")["umt5xxl"][0]
    pieces = SentencePieceTokenizer(spiece_model())
    expected = [t for word in "a cat walks".split() for t in pieces.encode(word)]
    assert [t for t, _ in tokens[: len(expected)]] == expected
    assert tokens[len(expected)][0] == 1 and len(tokens) == 512
    assert all(t == 0 for t, _ in tokens[len(expected) + 1:])
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a cat walks"))[0][0]
    assert cond.shape == (1, 512, 128)
    assert cond[0, : len(expected) + 1].abs().sum(-1).min() > 0
    assert cond[0, len(expected) + 1:].abs().max() == 0


def test_umt5_without_its_tokenizer_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from comfy_kernel_core_nodes.model.loading import UnsupportedModel

    sd = load_file(str(umt5_file()))
    del sd["spiece_model"]
    save_file(sd, str(tmp_path / "umt5.safetensors"))
    with pytest.raises(UnsupportedModel, match="spiece_model"):
        load_clip([str(tmp_path / "umt5.safetensors")], "wan")


def test_vae_files_round_trip_video_shapes():
    import numpy as np

    frames = torch.from_numpy(np.random.default_rng(0).random((5, 64, 64, 3), dtype=np.float32))
    for path, channels, ratio in ((vae21_file(), 16, 8), (vae22_file(), 48, 16)):
        vae = load_vae(str(path))
        latent = vae.encode(frames)
        assert latent.shape == (1, channels, 2, 64 // ratio, 64 // ratio)
        assert vae.decode(latent).shape == (1, 5, 64, 64, 3)


def test_lora_patches_every_block():
    from safetensors.torch import load_file

    from comfy_kernel_core_nodes.model.lora import load_lora_for_models

    patcher = load_diffusion_model(str(transformer_file("t2v")))
    patched, _ = load_lora_for_models(patcher, None, load_file(str(lora_file("t2v"))), 1.0, 0.0)
    keys = set(patched.patches)
    assert "diffusion_model.blocks.1.ffn.0.weight" in keys and len(keys) == 10
    assert {"diffusion_model.blocks.0.self_attn.q.bias", "diffusion_model.blocks.0.norm3.weight"} <= keys
    x, t, context = torch.randn(1, 16, 1, 4, 4), torch.tensor([600.0]), torch.randn(1, 3, 128)
    outs = []
    for p in (patcher, patched):
        with p.use() as model, torch.no_grad():
            outs.append(model.diffusion_model(x, t, context))
    assert not torch.allclose(outs[0], outs[1])


def test_wan22_timesteps_are_per_frame_and_the_start_frame_is_kept():
    patcher = load_diffusion_model(str(transformer_file("ti2v")))
    model = patcher.model
    mask = torch.ones(1, 1, 3, 4, 4)
    mask[:, :, 0] = 0
    out = model.process_timestep(torch.tensor([800.0]), x=None, denoise_mask=mask)
    assert out.tolist() == [[0.0, 800.0, 800.0]]
    latent = torch.randn(1, 48, 3, 4, 4)
    assert model.scale_latent_inpaint(x=latent, sigma=torch.tensor([1.0]), noise=latent * 2,
                                      latent_image=latent) is latent


def test_i2v_concat_matches_comfyui_rule():
    """WanImageToVideo's latents and mask become 20 channels: 4 of (1 - mask), 16 of normalised latents."""
    patcher = load_diffusion_model(str(transformer_file("i2v")))
    model = patcher.model
    noise = torch.zeros(1, 16, 3, 4, 4)
    image = torch.randn(1, 16, 3, 4, 4)
    mask = torch.ones(1, 1, 3, 4, 4)
    mask[:, :, 0] = 0
    concat = model.concat_cond(noise=noise, device="cpu", concat_latent_image=image, concat_mask=mask)
    assert concat.shape == (1, 20, 3, 4, 4)
    assert concat[:, :4, 0].eq(1).all() and concat[:, :4, 1:].eq(0).all()
    close(concat[:, 4:], model.process_latent_in(image))
    no_image = model.concat_cond(noise=noise, device="cpu")
    assert no_image.shape == (1, 20, 3, 4, 4) and no_image.abs().max() == 0


def test_wan_nodes_through_the_server(graph_server):
    """WanVaceToVideo + TrimVideoLatent, WanImageToVideo and EmptyHunyuanLatentVideo shapes in one prompt."""
    from _files_wan import place

    place(vae21_file(), graph_server.models_dir("vae"), "wan21_small.safetensors")
    prompt = {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "wan21_small.safetensors"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 3, "color": 0}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["9", 0]}},
        "4": {"class_type": "WanVaceToVideo", "inputs": {
            "positive": ["3", 0], "negative": ["3", 0], "vae": ["1", 0], "width": 64, "height": 48, "length": 9,
            "batch_size": 2, "strength": 0.5, "control_video": ["2", 0], "reference_image": ["2", 0]}},
        "5": {"class_type": "TrimVideoLatent", "inputs": {"samples": ["4", 2], "trim_amount": ["4", 3]}},
        "6": {"class_type": "WanImageToVideo", "inputs": {
            "positive": ["3", 0], "negative": ["3", 0], "vae": ["1", 0], "width": 64, "height": 48, "length": 9,
            "batch_size": 1, "start_image": ["2", 0]}},
        "7": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 48, "length": 9,
                                                                  "batch_size": 2}},
        "8": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan"}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "a cat"}},
        "p1": {"class_type": "TestProbe", "inputs": {"name": "vace", "value": ["4", 2]}},
        "p2": {"class_type": "TestProbe", "inputs": {"name": "trim", "value": ["4", 3]}},
        "p3": {"class_type": "TestProbe", "inputs": {"name": "trimmed", "value": ["5", 0]}},
        "p4": {"class_type": "TestProbe", "inputs": {"name": "vace_cond", "value": ["4", 0]}},
        "p5": {"class_type": "TestProbe", "inputs": {"name": "i2v_cond", "value": ["6", 0]}},
        "p6": {"class_type": "TestProbe", "inputs": {"name": "empty", "value": ["7", 0]}},
    }
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5.safetensors")
    got = graph_server.run(prompt)
    assert got["vace"]["samples"].shape == (2, 16, 4, 6, 8) and got["trim"] == 1
    assert got["trimmed"]["samples"].shape == (2, 16, 3, 6, 8)
    assert got["empty"]["samples"].shape == (2, 16, 3, 6, 8)
    assert got["vace_cond"] is not None and got["i2v_cond"] is not None


def test_video_vae_tiled_decode_in_time_and_space():
    """VAEDecodeTiled on video latents: one tile is the plain decode; time chunks keep the causal prefix exact."""
    from comfy_kernel_core_nodes.nodes.vae import VAEDecodeTiled

    torch.manual_seed(0)
    vae = load_vae(str(vae21_file()))
    z = torch.randn(1, 16, 6, 8, 8)
    full = vae.decode(z)
    assert full.shape == (1, 21, 64, 64, 3)
    close(vae.decode_tiled(z, tile_x=64, tile_y=64, overlap=2, tile_t=999, overlap_t=1), full, rtol=1e-5)
    chunks = vae.decode_tiled(z, tile_x=64, tile_y=64, overlap=2, tile_t=3, overlap_t=1)
    close(chunks[:, :8], full[:, :8], rtol=1e-5)  # the first chunk, before the overlap, sees what the full decode sees
    assert not torch.allclose(chunks[:, 9:], full[:, 9:])
    (images,) = VAEDecodeTiled().decode(vae, {"samples": z}, tile_size=32, overlap=8, temporal_size=12,
                                        temporal_overlap=4)
    assert images.shape == (21, 64, 64, 3) and 0 <= float(images.min()) and float(images.max()) <= 1


def test_first_last_frame_masks_follow_comfyui():
    """Start frames keep 1 + 3 padding frames' mask at 0, end frames theirs; the mask is 4 per latent frame."""
    from comfy_kernel_core_nodes.families.wan.nodes import first_last_frame

    vae = load_vae(str(vae21_file()))
    cond = [[torch.zeros(1, 4, 8), {}]]
    image = torch.rand(1, 40, 72, 3)
    positive, negative, latent = first_last_frame(cond, cond, vae, 64, 48, 9, 2, image, image)
    assert latent["samples"].shape == (2, 16, 3, 6, 8)
    mask = positive[0][1]["concat_mask"]
    assert mask.shape == (1, 4, 3, 6, 8)
    expected = torch.ones(12)
    expected[:4] = 0
    expected[-1] = 0
    assert torch.equal(mask[0, :, :, 0, 0].transpose(0, 1).reshape(-1), expected)
    assert positive[0][1]["concat_latent_image"].shape == (1, 16, 3, 6, 8)
    assert "clip_vision_output" not in negative[0][1]


def test_fp8_experts_stream_under_a_small_budget(monkeypatch):
    """A scaled-fp8 expert that does not fit the (simulated) device budget runs streamed, with the same result."""
    from comfy_kernel import gpu
    from comfy_kernel.gpu.memory import STREAMED, ModelManager

    path = str(transformer_file("t2v", fp8_scaled=True))
    x, t, context = torch.randn(1, 16, 2, 4, 4), torch.tensor([0.7]), torch.randn(1, 6, 128)
    with torch.no_grad(), load_diffusion_model(path).use() as bound:
        expected = bound.apply_model(x, t, c_crossattn=context)
    monkeypatch.setattr(gpu, "_manager", ModelManager("cpu", budgets={"cpu": 2**20}, offload_device="cpu"))
    with torch.no_grad(), load_diffusion_model(path).use() as bound:
        out = bound.apply_model(x, t, c_crossattn=context)
    (handle,) = gpu.model_manager().handles()
    assert handle.state == STREAMED and handle.streamer.moves > 0
    close(out, expected, rtol=1e-6)


def test_networks_read_weights_only_through_their_layers():
    """Streamed to another device ("meta"), every weight a forward pass touches arrives through its layer's hooks."""
    from comfy_kernel.gpu.streaming import WeightStreamer

    for cfg in (WanConfig(model_type="i2v", in_dim=36, image_embedding=True, **SMALL),
                WanConfig(model_type="vace", vace_layers=1, vace_in_dim=96, **SMALL)):
        net = WanTransformer(cfg).eval()
        randomize(net)
        WeightStreamer(net, "meta").attach()
        x = torch.randn(1, cfg.in_dim, 2, 4, 4, device="meta")
        extra = {"clip_fea": torch.randn(1, 257, 1280, device="meta")} if cfg.image_embedding else \
            {"vace_context": torch.randn(1, 1, 96, 2, 4, 4, device="meta"), "vace_strength": [1.0]}
        with torch.no_grad():
            out = net(x, torch.tensor([500.0], device="meta"), torch.randn(1, 5, 64, device="meta"), **extra)
        assert out.device.type == "meta" and out.shape == (1, 16, 2, 4, 4)
        assert all(p.device.type == "cpu" for p in net.parameters())
    vae = WanVAE22(dim=16, dec_dim=32).eval()
    randomize(vae)
    WeightStreamer(vae, "meta").attach()
    with torch.no_grad():
        assert vae.decode(torch.randn(1, 48, 2, 2, 2, device="meta")).shape == (1, 3, 5, 32, 32)


def test_fun_control_reference_tokens():
    """Fun-Control 2.2: a reference latent's tokens go first (one more rope frame) and are cut before the output."""
    cfg = WanConfig(in_dim=52, in_dim_ref_conv=16, **SMALL)
    net = WanTransformer(cfg).eval()
    randomize(net)
    x, t, context = torch.randn(1, 52, 2, 4, 6), torch.tensor([500.0]), torch.randn(1, 5, 64)
    ref = torch.randn(1, 16, 4, 6)
    with torch.no_grad():
        plain = net(x, t, context)
        with_ref = net(x, t, context, reference_latent=ref)
    assert plain.shape == with_ref.shape == (1, 16, 2, 4, 6)
    assert not torch.allclose(plain, with_ref)
    found, _ = model_config(str(transformer_file("control22")))
    assert found.unet_config["in_dim_ref_conv"] == 16 and type(found).__name__ == "Wan21T2V"
