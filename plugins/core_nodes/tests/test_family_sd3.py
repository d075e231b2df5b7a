"""SD3 / SD3.5: detection from the keys, the MMDiT against diffusers, the text encoders' combination rules.

Random weights in ComfyUI's key layout; see _sd3.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _flux import clip_l_state_dict, prefixed, rel_error, t5_state_dict, vae16_state_dict  # noqa: E402
from _random_weights import fp8_state_dict, write  # noqa: E402
from _sd3 import VARIANTS, mmdit_params, mmdit_state_dict  # noqa: E402

from comfy_kernel_core_nodes.model.base import ModelType  # noqa: E402
from comfy_kernel_core_nodes.model.loading import load_checkpoint, load_clip, load_diffusion_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _network(params, sd):
    from comfy_kernel_core_nodes.families.sd3.mmdit import MMDiT

    with torch.device("meta"):
        net = MMDiT(params)
    missing, unexpected = net.load_state_dict(sd, strict=False, assign=True)
    assert not missing and not unexpected
    return net.eval()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_diffusion_model_files_are_detected(tmp_path, variant):
    params = mmdit_params(variant)
    sd = mmdit_state_dict(params, dtype=torch.float16)
    path = write(tmp_path / f"{variant}.safetensors", sd)
    patcher = load_diffusion_model(str(path))
    model = patcher.model
    assert model.model_config.family == "sd3" and model.model_type == ModelType.FLOW
    config = model.model_config.unet_config
    assert (config["depth"], config["in_channels"], config["out_channels"], config["patch_size"]) == (3, 16, 16, 2)
    assert config["pos_embed_max_size"] == 16 and config["adm_in_channels"] == 2048
    assert config.get("qk_norm") == VARIANTS[variant].get("qk_norm")
    assert config["x_block_self_attn_layers"] == list(VARIANTS[variant].get("x_block_self_attn_layers", ()))
    assert model.latent_format.latent_channels == 16 and model.latent_format.scale_factor == 1.5305
    assert float(model.model_sampling.shift) == 3.0
    assert model.weights.keys == frozenset(sd)  # the network takes every tensor of the file, and needs no other
    with patcher.use() as bound:
        assert set(bound.diffusion_model.state_dict()) == set(sd)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mmdit_matches_diffusers(variant):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    params = mmdit_params(variant)
    sd = mmdit_state_dict(params, seed=5)
    ours = _network(params, sd)
    oracle = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=params.depth, attention_head_dim=64,
        num_attention_heads=params.depth, joint_attention_dim=4096, caption_projection_dim=params.hidden_size,
        pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=16,
        dual_attention_layers=params.x_block_self_attn_layers,
        qk_norm="rms_norm" if params.qk_norm else None).eval()
    converted = convert_sd3_transformer_checkpoint_to_diffusers({k: v.clone() for k, v in sd.items()})
    missing, unexpected = oracle.load_state_dict(converted, strict=False)
    assert not missing and not unexpected
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(2, 16, 8, 12, generator=g)
    context = torch.randn(2, 20, 4096, generator=g)
    pooled = torch.randn(2, 2048, generator=g)
    t = torch.tensor([700.0, 250.0])
    with torch.no_grad():
        out = ours(latent, t, context=context, y=pooled)
        ref = oracle(hidden_states=latent, encoder_hidden_states=context, pooled_projections=pooled,
                     timestep=t).sample
    assert out.shape == latent.shape
    assert rel_error(out, ref) < 1e-4


def test_odd_latent_sizes_are_padded_and_cropped():
    params = mmdit_params()
    net = _network(params, mmdit_state_dict(params, seed=2))
    with torch.no_grad():
        out = net(torch.randn(1, 16, 9, 7), torch.tensor([500.0]), context=torch.randn(1, 5, 4096),
                  y=torch.randn(1, 2048))
    assert out.shape == (1, 16, 9, 7) and torch.isfinite(out).all()


def test_block_replace_patch_gets_comfyui_arguments():
    params = mmdit_params("sd3.5_medium")
    net = _network(params, mmdit_state_dict(params, seed=3))
    seen = []

    def skip(args, extra):
        seen.append(sorted(args))
        return {"img": args["img"], "txt": args["txt"]}

    def through(args, extra):
        return extra["original_block"](args)

    x, t = torch.randn(1, 16, 8, 8), torch.tensor([300.0])
    context, y = torch.randn(1, 6, 4096), torch.randn(1, 2048)
    with torch.no_grad():
        plain = net(x, t, context=context, y=y)
        same = net(x, t, context=context, y=y, transformer_options={
            "patches_replace": {"dit": {("double_block", i): through for i in range(params.depth)}}})
        skipped = net(x, t, context=context, y=y,
                      transformer_options={"patches_replace": {"dit": {("double_block", 1): skip}}})
    assert torch.equal(plain, same)
    assert seen == [["img", "transformer_options", "txt", "vec"]]
    assert not torch.allclose(plain, skipped)


def test_fp8_weight_dtype_and_scaled_fp8_file_match_float_weights(tmp_path):
    params = mmdit_params("sd3.5_large")
    sd = mmdit_state_dict(params, seed=9, dtype=torch.bfloat16)
    scaled = write(tmp_path / "scaled.safetensors", fp8_state_dict(sd, scaled=True))
    plain = write(tmp_path / "plain.safetensors", sd)
    x, t = torch.randn(1, 16, 8, 8), torch.tensor([0.6])
    cond = {"c_crossattn": torch.randn(1, 6, 4096), "y": torch.randn(1, 2048)}
    outs = []
    for path, options in ((plain, {}), (plain, {"dtype": torch.float8_e4m3fn}), (scaled, {})):
        patcher = load_diffusion_model(str(path), options)
        with patcher.use() as model:
            if path == scaled:
                assert model.diffusion_model.joint_blocks[0].x_block.attn.qkv.weight.dtype == torch.float8_e4m3fn
            outs.append(model.apply_model(x, t, **cond))
    assert all(torch.isfinite(o).all() for o in outs)
    assert rel_error(outs[1], outs[0]) < 0.1 and rel_error(outs[2], outs[0]) < 0.1


def test_text_encoders_combine_as_comfyui(tmp_path):
    from comfy_kernel_core_nodes.components.clip.text_model import encode_chunks
    from comfy_kernel_core_nodes.components.t5 import encode_t5

    l_path = write(tmp_path / "clip_l.safetensors", clip_l_state_dict())
    t5_path = write(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors", fp8_state_dict(t5_state_dict(), scaled=True))
    clip = load_clip([str(t5_path), str(l_path)], "sd3")  # DualCLIPLoader sd3: CLIP-L + T5, any order
    tokens = clip.tokenize("a (red:1.2) fox")
    assert len(tokens["t5xxl"][0]) == 77 and len(tokens["l"][0]) == len(tokens["g"][0]) == 77
    with clip.patcher.use() as bound:
        module = bound.loaded_module
        cond, pooled = bound.encode_token_weights(tokens)[:2]
        l_out, l_pooled = encode_chunks(module.clip_l.transformer.text_model, [[p[:2] for p in tokens["l"][0]]],
                                        -2, layer_norm_hidden=False, projected_pooled=False)
        t5_out, _, _ = encode_t5(module.t5xxl.transformer, tokens["t5xxl"])
        empty_cond, empty_pooled = bound.encode_token_weights({"l": [], "g": [], "t5xxl": []})[:2]
    assert cond.shape == (1, 77 + 77, 4096) and pooled.shape == (1, 2048)
    assert torch.equal(cond[:, :77, :768], l_out) and not cond[:, :77, 768:].any()  # no CLIP-G: zeros
    assert torch.equal(cond[:, 77:, : t5_out.shape[-1]], t5_out)
    assert torch.equal(pooled[:, :768], l_pooled) and not pooled[:, 768:].any()
    assert empty_cond.shape == (1, 1, 4096) and not empty_pooled.any()  # T5's end token alone, zero pooled


def test_checkpoint_without_text_encoders_and_clip_loader_t5_only(tmp_path):
    tensors = {**prefixed(mmdit_state_dict(mmdit_params(), dtype=torch.float16), "model.diffusion_model."),
               **prefixed(vae16_state_dict(dtype=torch.float16), "first_stage_model.")}
    model, clip, vae = load_checkpoint(str(write(tmp_path / "sd3_medium.safetensors", tensors)))
    assert model.model.model_config.family == "sd3" and clip is None and vae.latent_channels == 16
    t5_path = write(tmp_path / "t5.safetensors", t5_state_dict())
    clip = load_clip([str(t5_path)], "sd3")
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a cat"))
    assert cond[0][0].shape == (1, 77, 4096) and not cond[0][1]["pooled_output"].any()


def test_triple_clip_with_clip_g_in_comfyui_file_layout(tmp_path):
    """clip_g.safetensors keeps its projection beside text_model; G's pooled output is projected."""
    from _sd3 import clip_g_file

    from comfy_kernel_core_nodes.components.clip.text_model import encode_chunks

    l_path = write(tmp_path / "clip_l.safetensors", clip_l_state_dict())
    t5_path = write(tmp_path / "t5.safetensors", t5_state_dict())
    clip = load_clip([str(clip_g_file()), str(t5_path), str(l_path)], "sd3")
    assert "clip_g.transformer.text_model.text_projection.weight" in clip.cond_stage_model.state_dict_keys()
    tokens = clip.tokenize("a lighthouse")
    with clip.patcher.use() as bound:
        g = bound.loaded_module.clip_g.transformer.text_model
        cond, pooled = bound.encode_token_weights(tokens)[:2]
        g_out, g_pooled = encode_chunks(g, [[p[:2] for p in tokens["g"][0]]], -2, layer_norm_hidden=False,
                                        pad_token=0)
    assert cond.shape == (1, 154, 4096) and torch.equal(cond[:, :77, 768:2048], g_out)
    assert torch.equal(pooled[:, 768:], g_pooled) and g_pooled.shape == (1, 1280)


def test_diffusers_format_lora_patches_slices_of_the_fused_projections(tmp_path):
    from comfy_kernel_core_nodes.model.lora import load_lora_for_models

    params = mmdit_params("sd3.5_medium")
    sd = mmdit_state_dict(params, seed=4)
    patcher = load_diffusion_model(str(write(tmp_path / "m.safetensors", sd)))
    width, rank = params.hidden_size, 4
    g = torch.Generator().manual_seed(1)
    lora = {}
    for name in ("transformer.transformer_blocks.1.attn.to_k", "transformer.transformer_blocks.0.attn2.to_v",
                 "transformer.transformer_blocks.2.ff.net.2"):
        out_dim = width
        in_dim = width * 4 if name.endswith("net.2") else width
        lora[f"{name}.lora_A.weight"] = torch.randn(rank, in_dim, generator=g)
        lora[f"{name}.lora_B.weight"] = torch.randn(out_dim, rank, generator=g)
    patched, _ = load_lora_for_models(patcher, None, lora, 0.5, 0.0)
    after = patched.model_state_dict()

    def delta(name):
        return 0.5 * lora[f"transformer.{name}.lora_B.weight"] @ lora[f"transformer.{name}.lora_A.weight"]

    qkv = "diffusion_model.joint_blocks.1.x_block.attn.qkv.weight"
    expected = sd["joint_blocks.1.x_block.attn.qkv.weight"].clone()
    expected[width:2 * width] += delta("transformer_blocks.1.attn.to_k")
    assert torch.allclose(after[qkv], expected, atol=1e-5)
    qkv2 = "diffusion_model.joint_blocks.0.x_block.attn2.qkv.weight"
    expected2 = sd["joint_blocks.0.x_block.attn2.qkv.weight"].clone()
    expected2[2 * width:] += delta("transformer_blocks.0.attn2.to_v")
    assert torch.allclose(after[qkv2], expected2, atol=1e-5)
    fc2 = "diffusion_model.joint_blocks.2.x_block.mlp.fc2.weight"
    assert torch.allclose(after[fc2], sd["joint_blocks.2.x_block.mlp.fc2.weight"] +
                          delta("transformer_blocks.2.ff.net.2"), atol=1e-5)


def _inputs():
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, 16, 8, 8, generator=g), torch.tensor([0.6]), torch.randn(1, 7, 4096, generator=g),
            torch.randn(1, 2048, generator=g))


def test_streamed_under_a_small_budget_matches(tmp_path, monkeypatch):
    """Weights that do not fit the (simulated) device budget run streamed, layer by layer, with the same result."""
    from comfy_kernel import gpu
    from comfy_kernel.gpu.memory import STREAMED, ModelManager

    params = mmdit_params("sd3.5_medium")
    sd = mmdit_state_dict(params, seed=10)
    monkeypatch.setattr(gpu, "_manager", ModelManager("cpu", budgets={"cpu": 4 * 2**20}, offload_device="cpu"))
    patcher = load_diffusion_model(str(write(tmp_path / "sd3.safetensors", sd)))
    latent, t, context, pooled = _inputs()
    with torch.no_grad(), patcher.use() as bound:
        out = bound.apply_model(latent, t, c_crossattn=context, y=pooled)
    (handle,) = gpu.model_manager().handles()
    assert handle.state == STREAMED and handle.streamer.moves > 0
    with torch.no_grad():
        ref = latent - _network(params, sd)(latent, t * 1000, context=context, y=pooled) * 0.6
    assert rel_error(out, ref) < 1e-5


def test_mmdit_reads_weights_only_through_its_layers():
    """Streamed to another device ("meta"), every weight the forward pass touches arrives through its layer."""
    from comfy_kernel.gpu.streaming import WeightStreamer

    params = mmdit_params("sd3.5_medium")
    net = _network(params, mmdit_state_dict(params, seed=11))
    WeightStreamer(net, "meta").attach()
    latent, t, context, pooled = (v.to("meta") for v in _inputs())
    with torch.no_grad():
        out = net(latent, t, context=context, y=pooled)
    assert out.device.type == "meta" and out.shape == latent.shape
    assert all(p.device.type == "cpu" for p in net.parameters())


def _hf_clip(transformers, cfg, sd):
    config = transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.mlp_width,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=cfg.max_positions,
        hidden_act=cfg.activation, layer_norm_eps=cfg.eps, projection_dim=cfg.width, eos_token_id=cfg.end_token,
        bos_token_id=49406, pad_token_id=1)
    cls = transformers.CLIPTextModelWithProjection if cfg.projection else transformers.CLIPTextModel
    model = cls(config).eval()
    tower = "text_model." if any(k.startswith("text_model.") for k in model.state_dict()) else ""
    weights = {("" if k == "text_projection.weight" else tower) + k: v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not [k for k in missing if not k.endswith("position_ids")] and not unexpected
    return model


def test_sd3_conditioning_matches_transformers_encoders():
    """CLIP-L, a CLIP-G-shaped encoder (2 layers) and T5 on random weights, combined as ComfyUI's sd3_clip does,
    against transformers' CLIPTextModel / CLIPTextModelWithProjection / T5EncoderModel."""
    transformers = pytest.importorskip("transformers")
    from _random_weights import module_shapes, random_state_dict

    from comfy_kernel_core_nodes.components import t5
    from comfy_kernel_core_nodes.components.clip.text_model import CLIPTextConfig, CLIPTextModel
    from comfy_kernel_core_nodes.families.sd3.text import SD3TextEncoders, SD3Tokenizer, encode_sd3

    g_cfg = CLIPTextConfig(width=320, layers=2, heads=5, mlp_width=1280, activation="gelu", projection=True)
    t5_cfg = t5.T5Config(width=4096, ff_width=256, heads=2, layers=2, vocab_size=32128)
    with torch.device("meta"):
        module = SD3TextEncoders(("clip_l", "t5xxl"), t5_cfg)
        module.clip_g = torch.nn.Module()
        module.clip_g.transformer = torch.nn.Module()
        module.clip_g.transformer.text_model = CLIPTextModel(g_cfg)
    sd = random_state_dict(module_shapes(module), seed=12, dtype=torch.float32)
    module.load_state_dict(sd, assign=True)
    module.eval()

    def part(prefix):
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

    hf_l = _hf_clip(transformers, CLIPTextConfig(), part("clip_l.transformer.text_model."))
    hf_g = _hf_clip(transformers, g_cfg, part("clip_g.transformer.text_model."))
    t5_sd = part("t5xxl.transformer.")
    hf_t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=256, num_layers=2, num_heads=2, feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        layer_norm_epsilon=1e-6)).eval()
    hf_t5.load_state_dict({**t5_sd, "encoder.embed_tokens.weight": t5_sd["shared.weight"]}, strict=False)

    tokens = SD3Tokenizer().tokenize_with_weights("a lighthouse on a cliff at dusk")
    # the G-shaped encoder is narrower than CLIP-G: its states sit at 768.. and are padded as CLIP-G's would be
    cond, pooled = encode_sd3(module, tokens, {})
    ids = {k: torch.tensor([[p[0] for p in tokens[k][0]]]) for k in ("l", "g", "t5xxl")}
    with torch.no_grad():
        l_out = hf_l(input_ids=ids["l"], output_hidden_states=True)
        g_out = hf_g(input_ids=ids["g"], output_hidden_states=True)
        t5_out = hf_t5(input_ids=ids["t5xxl"]).last_hidden_state
    lg = torch.cat([l_out.hidden_states[-2], g_out.hidden_states[-2]], dim=-1)
    ref_cond = torch.cat([torch.nn.functional.pad(lg, (0, 4096 - lg.shape[-1])), t5_out], dim=-2)
    ref_pooled = torch.cat([l_out.pooler_output, g_out.text_embeds], dim=-1)
    assert cond.shape == (1, 154, 4096) and pooled.shape == (1, 768 + 320)
    assert rel_error(cond[:, :77], ref_cond[:, :77]) < 1e-4 and rel_error(cond[:, 77:], ref_cond[:, 77:]) < 1e-4
    assert rel_error(pooled, ref_pooled) < 1e-4


def test_fp8_mixed_file_keeps_each_layer_as_stored(tmp_path):
    """ComfyUI's "fp8mixed" layout: joint-block matrices in fp8 with a ``weight_scale`` and a ``comfy_quant``
    entry, the other layers bf16; the result equals the dequantized weights'."""
    from _flux import fp8_mixed

    params = mmdit_params("sd3.5_large")
    sd = {k: v.to(torch.bfloat16).float() for k, v in mmdit_state_dict(params, seed=13).items()}
    stored, dequantized = fp8_mixed(sd)
    patcher = load_diffusion_model(str(write(tmp_path / "sd3.5-fp8mixed.safetensors", stored)))
    assert patcher.model.weights.keys == frozenset(sd)
    latent, t, context, pooled = _inputs()
    with torch.no_grad(), patcher.use() as bound:
        net = bound.diffusion_model
        assert net.joint_blocks[0].x_block.attn.qkv.weight.dtype == torch.float8_e4m3fn
        assert net.x_embedder.proj.weight.dtype == torch.bfloat16
        out = net(latent, t * 1000, context=context, y=pooled)
        ref = _network(params, dequantized)(latent, t * 1000, context=context, y=pooled)
    assert rel_error(out, ref) < 1e-5


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_diffusers_transformer_folder_loads_as_the_mmdit(tmp_path, variant):
    """A transformer saved by diffusers (split q/k/v, its own names, (scale, shift) final modulations) loads in
    UNETLoader's path, as a folder and as the single file, and runs as diffusers' own model."""
    diffusers = pytest.importorskip("diffusers")

    params = mmdit_params(variant)
    torch.manual_seed(7)
    oracle = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=params.depth, attention_head_dim=64,
        num_attention_heads=params.depth, joint_attention_dim=4096, caption_projection_dim=params.hidden_size,
        pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=16,
        dual_attention_layers=params.x_block_self_attn_layers,
        qk_norm="rms_norm" if params.qk_norm else None).eval()
    for module in oracle.modules():  # diffusers zero-initialises the output layers: give them values
        if isinstance(module, torch.nn.Linear) and not module.weight.abs().sum():
            torch.nn.init.normal_(module.weight, std=0.02)
    oracle.save_pretrained(str(tmp_path / "transformer"))
    for path in (tmp_path / "transformer", tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"):
        model = load_diffusion_model(str(path)).model
        config = model.model_config.unet_config
        assert model.model_config.family == "sd3" and config["depth"] == params.depth
        assert config.get("qk_norm") == VARIANTS[variant].get("qk_norm")
        assert config["x_block_self_attn_layers"] == list(VARIANTS[variant].get("x_block_self_attn_layers", ()))
        ours = model.weights.build(model.weights.read("cpu")).float()
        g = torch.Generator().manual_seed(0)
        latent, context = torch.randn(2, 16, 8, 12, generator=g), torch.randn(2, 20, 4096, generator=g)
        pooled, t = torch.randn(2, 2048, generator=g), torch.tensor([700.0, 250.0])
        with torch.no_grad():
            out = ours(latent, t, context=context, y=pooled)
            ref = oracle(hidden_states=latent, encoder_hidden_states=context, pooled_projections=pooled,
                         timestep=t).sample
        assert rel_error(out, ref) < 1e-4
