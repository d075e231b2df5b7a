"""Flux.1: detection from the keys, the transformer, VAE and text encoders against diffusers/transformers.

Random weights in the original (Black Forest Labs) key layout; see _flux.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _flux import (  # noqa: E402
    clip_l_state_dict,
    diffusers_converter,
    flux_params,
    flux_state_dict,
    fp8_mixed,
    prefixed,
    rel_error,
    scaled_fp8,
    t5_state_dict,
    vae16_state_dict,
)
from _quant_files import dequantize_layers, quantize_layers  # noqa: E402
from _random_weights import write  # noqa: E402

from comfy_kernel_core_nodes.model.base import ModelType  # noqa: E402
from comfy_kernel_core_nodes.model.loading import load_checkpoint, load_clip, load_diffusion_model, load_vae  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _network(params, sd):
    from comfy_kernel_core_nodes.families.flux.model import Flux

    with torch.device("meta"):
        net = Flux(params)
    missing, unexpected = net.load_state_dict(sd, strict=False, assign=True)
    assert not missing and not unexpected
    return net.eval()


@pytest.mark.parametrize("variant, overrides, family, model_type", [
    ("dev", {}, "flux", ModelType.FLUX),
    ("schnell", {"guidance_embed": False}, "flux_schnell", ModelType.FLOW),
    ("fill", {"in_channels": 384}, "flux_fill", ModelType.FLUX),
])
def test_diffusion_model_files_are_detected(tmp_path, variant, overrides, family, model_type):
    params = flux_params(**overrides)
    sd = flux_state_dict(params, dtype=torch.float16)
    path = write(tmp_path / f"{variant}.safetensors", sd)
    patcher = load_diffusion_model(str(path))
    model = patcher.model
    assert model.model_config.family == family and model.model_type == model_type
    config = model.model_config.unet_config
    assert (config["hidden_size"], config["num_heads"], config["depth"], config["depth_single_blocks"]) == \
        (256, 2, 2, 2)
    assert config["in_channels"] == params.in_channels // 4
    assert model.latent_format.latent_channels == 16 and model.latent_format.scale_factor == 0.3611
    assert model.weights.keys == frozenset(sd)  # the network takes every tensor of the file, and needs no other
    with patcher.use() as bound:
        assert set(bound.diffusion_model.state_dict()) == set(sd)
    if variant == "schnell":
        sigmas = model.model_sampling.sigmas
        assert float(sigmas[-1]) == pytest.approx(1.0) and float(sigmas[0]) == pytest.approx(0.001)


def test_single_file_checkpoint_gives_model_clip_and_vae(tmp_path):
    params = flux_params(guidance_embed=False)
    tensors = {**prefixed(flux_state_dict(params, dtype=torch.float16), "model.diffusion_model."),
               **prefixed(clip_l_state_dict(), "text_encoders.clip_l.transformer.text_model."),
               **prefixed(t5_state_dict(), "text_encoders.t5xxl.transformer."),
               **prefixed(vae16_state_dict(dtype=torch.float16), "vae.")}
    path = write(tmp_path / "flux1-schnell-tiny.safetensors", tensors)
    model, clip, vae = load_checkpoint(str(path))
    assert model.model.model_config.family == "flux_schnell"
    keys = clip.cond_stage_model.state_dict_keys()
    assert "t5xxl.transformer.encoder.block.1.layer.1.DenseReluDense.wi_1.weight" in keys
    assert "clip_l.transformer.text_model.encoder.layers.11.mlp.fc2.weight" in keys
    assert vae.latent_channels == 16
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a cat"))
    assert cond[0][0].shape == (1, 256, 256) and cond[0][1]["pooled_output"].shape == (1, 768)


def test_transformer_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for overrides in ({}, {"guidance_embed": False}):
        params = flux_params(**overrides)
        sd = flux_state_dict(params, seed=5)
        ours = _network(params, sd)
        oracle = diffusers.FluxTransformer2DModel(
            in_channels=64, num_layers=params.depth, num_single_layers=params.depth_single_blocks,
            attention_head_dim=128, num_attention_heads=params.num_heads, joint_attention_dim=params.context_in_dim,
            pooled_projection_dim=768, guidance_embeds=params.guidance_embed).eval()
        converted = diffusers_converter("convert_flux_transformer_checkpoint_to_diffusers")(dict(sd))
        missing, unexpected = oracle.load_state_dict(converted, strict=False)
        assert not missing and not unexpected
        g = torch.Generator().manual_seed(0)
        latent = torch.randn(1, 16, 8, 12, generator=g)
        context = torch.randn(1, 10, params.context_in_dim, generator=g)
        pooled = torch.randn(1, 768, generator=g)
        t = torch.tensor([0.7])
        guidance = torch.tensor([3.5]) if params.guidance_embed else None
        with torch.no_grad():
            out = ours(latent, t, context, y=pooled, guidance=guidance)
            tokens = diffusers.FluxPipeline._pack_latents(latent, 1, 16, 8, 12)
            ids = diffusers.FluxPipeline._prepare_latent_image_ids(1, 4, 6, "cpu", torch.float32)
            ref = oracle(hidden_states=tokens, encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                         img_ids=ids, txt_ids=torch.zeros(10, 3), guidance=guidance).sample
            ref = diffusers.FluxPipeline._unpack_latents(ref, 64, 96, 8)
        assert rel_error(out, ref) < 1e-4


def test_kontext_reference_tokens_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    params = flux_params()
    sd = flux_state_dict(params, seed=6)
    ours = _network(params, sd)
    oracle = diffusers.FluxTransformer2DModel(
        in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=128, num_attention_heads=2,
        joint_attention_dim=params.context_in_dim, guidance_embeds=True).eval()
    oracle.load_state_dict(diffusers_converter("convert_flux_transformer_checkpoint_to_diffusers")(dict(sd)))
    g = torch.Generator().manual_seed(1)
    latent, ref_latent = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 16, 8, 12, generator=g)
    context, pooled = torch.randn(1, 6, params.context_in_dim, generator=g), torch.randn(1, 768, generator=g)
    t, guidance = torch.tensor([0.4]), torch.tensor([2.5])
    with torch.no_grad():
        out = ours(latent, t, context, y=pooled, guidance=guidance, ref_latents=[ref_latent])
        # diffusers' Kontext pipeline: the reference's tokens follow the image's, their first id axis is 1
        tokens = torch.cat([diffusers.FluxPipeline._pack_latents(latent, 1, 16, 8, 8),
                            diffusers.FluxPipeline._pack_latents(ref_latent, 1, 16, 8, 12)], dim=1)
        ref_ids = diffusers.FluxPipeline._prepare_latent_image_ids(1, 4, 6, "cpu", torch.float32)
        ref_ids[..., 0] = 1
        ids = torch.cat([diffusers.FluxPipeline._prepare_latent_image_ids(1, 4, 4, "cpu", torch.float32), ref_ids])
        ref = oracle(hidden_states=tokens, encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                     img_ids=ids, txt_ids=torch.zeros(6, 3), guidance=guidance).sample[:, :16]
        ref = diffusers.FluxPipeline._unpack_latents(ref, 64, 64, 8)
    assert rel_error(out, ref) < 1e-4


def test_vae_matches_diffusers(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = vae16_state_dict(seed=7)
    vae = load_vae(str(write(tmp_path / "ae.safetensors", sd)))
    assert vae.latent_channels == 16
    config = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  layers_per_block=2, norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False)
    oracle = diffusers.AutoencoderKL(**config).eval()
    oracle.load_state_dict(convert_ldm_vae_checkpoint(dict(sd), config))
    image = torch.rand(1, 32, 40, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        latent = vae.encode(image)
        ref_latent = oracle.encode(image.movedim(-1, 1) * 2 - 1).latent_dist.mean
        decoded = vae.decode(latent)
        ref_image = ((oracle.decode(latent).sample + 1) / 2).clamp(0, 1).movedim(1, -1)
    assert latent.shape == (1, 16, 4, 5)
    assert rel_error(latent, ref_latent) < 1e-4
    assert float((decoded - ref_image).abs().max()) < 1e-4


def test_dual_clip_loader_flux(tmp_path):
    clip_path = write(tmp_path / "clip_l.safetensors", clip_l_state_dict())
    t5_path = write(tmp_path / "t5.safetensors", t5_state_dict())
    clip = load_clip([str(t5_path), str(clip_path)], "flux")
    tokens = clip.tokenize("a (red:1.2) fox")
    assert len(tokens["t5xxl"]) == 1 and len(tokens["t5xxl"][0]) == 256 and len(tokens["l"][0]) == 77
    cond = clip.encode_from_tokens_scheduled(tokens)
    context, options = cond[0]
    assert context.shape == (1, 256, 256) and torch.isfinite(context).all()
    assert options["pooled_output"].shape == (1, 768)
    chroma = load_clip([str(t5_path)], "chroma")
    tokens = chroma.tokenize("a (red:1.2) fox")
    assert list(tokens) == ["t5xxl"] and len(tokens["t5xxl"][0]) == 6  # no padding for Chroma
    assert chroma.encode_from_tokens_scheduled(tokens)[0][0].shape == (1, 6, 256)
    with pytest.raises(ValueError, match="one CLIP-L and one T5"):
        load_clip([str(t5_path), str(t5_path)], "flux")


def _inputs(params, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 16, 8, 8, generator=g), torch.tensor([0.6]),
            torch.randn(1, 7, params.context_in_dim, generator=g), torch.randn(1, 768, generator=g),
            torch.tensor([3.5]))


def test_scaled_fp8_file_stays_fp8_and_matches_its_dequantized_weights(tmp_path):
    params = flux_params()
    stored, dequantized = scaled_fp8(flux_state_dict(params, seed=9))
    patcher = load_diffusion_model(str(write(tmp_path / "flux-fp8-scaled.safetensors", stored)))
    latent, t, context, pooled, guidance = _inputs(params)
    with torch.no_grad(), patcher.use() as bound:
        net = bound.diffusion_model
        qkv = net.double_blocks[0].img_attn.qkv
        assert qkv.weight.dtype == torch.float8_e4m3fn and qkv.scale_weight.dtype == torch.float32
        out = net(latent, t, context, y=pooled, guidance=guidance)
        ref = _network(params, dequantized)(latent, t, context, y=pooled, guidance=guidance)
    assert rel_error(out, ref) < 1e-5
    assert "scaled_fp8" not in patcher.model.weights.keys and \
        not any(k.endswith("scale_weight") for k in patcher.model.weights.keys)


def test_fp8_mixed_file_keeps_each_layer_as_stored(tmp_path):
    """ComfyUI's "fp8mixed" layout (Chroma1-HD-fp8mixed, flux2_dev_fp8mixed): block matrices in fp8 with a
    ``weight_scale`` and a ``comfy_quant`` entry, the other layers bf16; an fp4 layer is refused by name."""
    import json

    from comfy_kernel_core_nodes.model.quant import UnsupportedQuantization

    params = flux_params()
    sd = {k: v.to(torch.bfloat16).float() for k, v in flux_state_dict(params, seed=10).items()}
    fp8 = torch.float8_e4m3fn
    stored, dequantized = fp8_mixed(sd)
    patcher = load_diffusion_model(str(write(tmp_path / "flux-fp8mixed.safetensors", stored)))
    assert patcher.model.weights.keys == frozenset(sd)
    latent, t, context, pooled, guidance = _inputs(params)
    with torch.no_grad(), patcher.use() as bound:
        net = bound.diffusion_model
        assert net.double_blocks[0].img_attn.qkv.weight.dtype == fp8
        assert net.img_in.weight.dtype == torch.bfloat16 and net.final_layer.linear.weight.dtype == torch.bfloat16
        out = net(latent, t, context, y=pooled, guidance=guidance)
        ref = _network(params, dequantized)(latent, t, context, y=pooled, guidance=guidance)
    assert rel_error(out, ref) < 1e-5
    other = torch.tensor(list(json.dumps({"format": "convrot_w4a4"}).encode()), dtype=torch.uint8)
    stored["double_blocks.0.img_attn.proj.comfy_quant"] = other
    with pytest.raises(UnsupportedQuantization, match="convrot_w4a4"):
        load_diffusion_model(str(write(tmp_path / "flux-w4a4mixed.safetensors", stored)))


def test_nvfp4_and_int8_mixed_file_stays_packed_and_runs_close_to_bf16(tmp_path):
    """ComfyUI's mixed layout with NVFP4 and int8 (convrot) layers beside bf16 ones: the packed weights stay
    packed in the network and decode per layer; the output stays near the bf16 weights' output."""
    params = flux_params()
    sd = {k: v.to(torch.bfloat16) for k, v in flux_state_dict(params, seed=12).items()}
    formats = {}
    for block in ("double_blocks.0", "double_blocks.1"):
        formats[f"{block}.img_attn.qkv"] = {"format": "nvfp4"}
        formats[f"{block}.img_mlp.0"] = {"format": "int8", "convrot": 256}
        formats[f"{block}.txt_mlp.2"] = {"format": "int8", "per_row": True}
    formats["single_blocks.0.linear1"] = {"format": "nvfp4"}
    stored = quantize_layers(sd, formats)
    patcher = load_diffusion_model(str(write(tmp_path / "flux-int8-fp4-mixed.safetensors", stored)))
    assert patcher.model.weights.keys == frozenset(sd)
    latent, t, context, pooled, guidance = _inputs(params)
    with torch.no_grad(), patcher.use() as bound:
        net = bound.diffusion_model
        assert net.double_blocks[0].img_attn.qkv.weight.dtype == torch.uint8
        assert net.double_blocks[1].img_mlp[0].weight.dtype == torch.int8
        assert net.single_blocks[0].linear1.weight.dtype == torch.uint8
        assert net.img_in.weight.dtype in (torch.bfloat16, torch.float32)
        out = net(latent, t, context, y=pooled, guidance=guidance)
        ref = _network(params, {k: v.float() for k, v in sd.items()})(latent, t, context, y=pooled,
                                                                        guidance=guidance)
    assert 0 < rel_error(out, ref) < 0.1


def test_scaled_fp8_t5_is_multiplied_out(tmp_path):
    from comfy_kernel_core_nodes.components import t5

    stored, dequantized = scaled_fp8({k: v.float() for k, v in t5_state_dict().items()})
    clip = load_clip([str(write(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors", stored))], "chroma")
    tokens = t5.tokenize_t5("a red fox", min_length=None)
    cond = clip.encode_from_tokens({"t5xxl": tokens})
    with torch.device("meta"):
        ref_model = t5.T5Encoder(t5.T5Config(width=256, ff_width=512, heads=4, layers=2))
    ref_model.load_state_dict({k: v.half() for k, v in dequantized.items() if k != "scaled_fp8"}, assign=True)
    ref, _, _ = t5.encode_t5(ref_model.eval(), tokens)
    assert rel_error(cond, ref) < 1e-5


def test_int8_and_nvfp4_t5_layers_are_dequantized_as_read(tmp_path):
    """Text encoders read through scaled_reader get a mixed file's packed layers in their own dtype (compared
    with the T5 built from the test's own dequantization of the same file)."""
    from comfy_kernel_core_nodes.components import t5

    sd = {k: v.to(torch.bfloat16) for k, v in t5_state_dict().items()}
    layers = sorted(k[: -len(".weight")] for k, v in sd.items()
                    if v.ndim == 2 and ".layer." in k and "relative_attention_bias" not in k)
    formats = {layer: [{"format": "nvfp4"}, {"format": "int8", "convrot": 256},
                       {"format": "int8", "per_row": True}][i % 3] for i, layer in enumerate(layers)}
    formats = {k: v if v.get("convrot") is None or sd[f"{k}.weight"].shape[1] % 256 == 0 else {"format": "int8"}
               for k, v in formats.items()}
    stored = quantize_layers(sd, formats)
    clip = load_clip([str(write(tmp_path / "t5xxl_int8_fp4_mixed.safetensors", stored))], "chroma")
    tokens = t5.tokenize_t5("a red fox", min_length=None)
    cond = clip.encode_from_tokens({"t5xxl": tokens})
    with torch.device("meta"):
        ref_model = t5.T5Encoder(t5.T5Config(width=256, ff_width=512, heads=4, layers=2))
    dequantized = dequantize_layers(stored, {k: tuple(v.shape) for k, v in sd.items()})
    ref_model.load_state_dict({k: v.half() for k, v in dequantized.items()}, assign=True)
    ref, _, _ = t5.encode_t5(ref_model.eval(), tokens)
    assert len(formats) >= 6 and rel_error(cond, ref) < 1e-3


@pytest.mark.parametrize("variant", ["flux", "chroma", "flux2", "klein_encoder", "clip_l_t5", "flux_packed"])
def test_streamed_under_a_small_budget_matches(tmp_path, monkeypatch, variant):
    """Weights that do not fit the (simulated) device budget run streamed, layer by layer, with the same result."""
    from _flux import chroma_state_dict, flux2_params, flux2_state_dict, klein_encoder_state_dict

    from comfy_kernel import gpu
    from comfy_kernel.gpu.memory import STREAMED, ModelManager

    def run(budget: int) -> torch.Tensor:
        monkeypatch.setattr(gpu, "_manager", ModelManager("cpu", budgets={"cpu": budget}, offload_device="cpu"))
        g = torch.Generator().manual_seed(1)
        if variant == "klein_encoder":
            clip = load_clip([str(path)], "flux2")
            return clip.encode_from_tokens_scheduled(clip.tokenize("a red fox"))[0][0]
        if variant == "clip_l_t5":
            clip = load_clip([str(path), str(clip_path)], "flux")
            cond, options = clip.encode_from_tokens_scheduled(clip.tokenize("a red fox"))[0]
            return torch.cat([cond.flatten(), options["pooled_output"].flatten()])
        patcher = load_diffusion_model(str(path))
        channels = 128 if variant == "flux2" else 16
        latent = torch.randn(1, channels, 4 if variant == "flux2" else 8, 8, generator=g)
        context = torch.randn(1, 7, patcher.model.unet_config["context_in_dim"], generator=g)
        extra = {"y": torch.randn(1, 768, generator=g)} if variant in ("flux", "flux_packed") else {}
        with torch.no_grad(), patcher.use() as bound:
            return bound.apply_model(latent, torch.tensor([0.6]), c_crossattn=context, guidance=torch.tensor([3.5]),
                                     **extra)

    sd = {"flux": lambda: flux_state_dict(flux_params(), seed=10),
          "chroma": lambda: chroma_state_dict(seed=10),
          "flux2": lambda: flux2_state_dict(flux2_params(), seed=10),
          "klein_encoder": lambda: klein_encoder_state_dict(dtype=torch.float16),
          "clip_l_t5": lambda: t5_state_dict(),
          "flux_packed": lambda: quantize_layers(
              flux_state_dict(flux_params(), seed=10, dtype=torch.bfloat16),
              {"double_blocks.0.img_attn.qkv": {"format": "nvfp4"},
               "double_blocks.1.img_mlp.0": {"format": "int8", "convrot": 256},
               "single_blocks.1.linear2": {"format": "int8", "per_row": True}})}[variant]()
    clip_path = write(tmp_path / "clip_l.safetensors", clip_l_state_dict())
    path = write(tmp_path / f"{variant}.safetensors", sd)
    out = run(4 * 2**20)
    (handle,) = gpu.model_manager().handles()
    assert handle.state == STREAMED and handle.streamer.moves > 0
    assert rel_error(out, run(2**40)) < 1e-5


def test_networks_read_weights_only_through_their_layers():
    """Streamed to another device ("meta"), every weight a forward pass touches must arrive through its layer's
    hooks: a layer reading another's weights directly would mix devices and fail."""
    from comfy_kernel.gpu.streaming import WeightStreamer
    from comfy_kernel_core_nodes.components import t5

    params = flux_params()
    net = _network(params, flux_state_dict(params, seed=11))
    WeightStreamer(net, "meta").attach()
    latent, t, context, pooled, guidance = (v.to("meta") for v in _inputs(params))
    with torch.no_grad():
        out = net(latent, t, context, y=pooled, guidance=guidance, ref_latents=[latent])
    assert out.device.type == "meta" and out.shape == latent.shape
    assert all(p.device.type == "cpu" for p in net.parameters())
    encoder = t5.T5Encoder(t5.T5Config(width=64, ff_width=128, heads=1, layers=2)).eval()
    WeightStreamer(encoder, "meta").attach()
    with torch.no_grad():
        states, _ = encoder(encoder.embed([[(3, 1.0), (1, 1.0), (0, 1.0)]], device=torch.device("meta")))
    assert states.device.type == "meta" and states.shape == (1, 3, 64)


def test_chroma_is_detected_and_matches_diffusers(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from _flux import CHROMA_EXTRA, chroma_state_dict

    sd = chroma_state_dict(seed=12)
    patcher = load_diffusion_model(str(write(tmp_path / "chroma.safetensors", sd)))
    config = patcher.model.model_config
    assert config.family == "chroma" and patcher.model.model_type == ModelType.FLUX
    assert {k: config.unet_config[k] for k in CHROMA_EXTRA} == CHROMA_EXTRA
    assert patcher.model.weights.keys == frozenset(sd)
    oracle = diffusers.ChromaTransformer2DModel(
        in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=128, num_attention_heads=2,
        joint_attention_dim=256, approximator_num_channels=64, approximator_hidden_dim=128,
        approximator_layers=2).eval()
    converted = diffusers_converter("convert_chroma_transformer_checkpoint_to_diffusers")(dict(sd))
    missing, unexpected = oracle.load_state_dict(converted, strict=False)
    assert not missing and not unexpected
    g = torch.Generator().manual_seed(3)
    latent, context, t = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 5, 256, generator=g), torch.tensor([0.3])
    with torch.no_grad(), patcher.use() as bound:
        out = bound.diffusion_model(latent, t, context, guidance=torch.tensor([0.0]))
        ref = oracle(hidden_states=diffusers.FluxPipeline._pack_latents(latent, 1, 16, 8, 8),
                     encoder_hidden_states=context, timestep=t, txt_ids=torch.zeros(5, 3),
                     img_ids=diffusers.FluxPipeline._prepare_latent_image_ids(1, 4, 4, "cpu", torch.float32)).sample
        ref = diffusers.FluxPipeline._unpack_latents(ref, 64, 64, 8)
    assert rel_error(out, ref) < 1e-4


@pytest.mark.parametrize("variant", ["flux", "flux2"])
def test_patch_points_and_wrappers(variant):
    """ComfyUI's DiT patch points: post_input, double/single block replacements with their argument dicts,
    double_block patches and diffusion_model wrappers; pass-through patches leave the output unchanged."""
    from _flux import flux2_params, flux2_state_dict

    from comfy_kernel_core_nodes.model import extension

    if variant == "flux":
        params = flux_params()
        ours = _network(params, flux_state_dict(params, seed=6))
        latent, extra = torch.randn(1, 16, 8, 8), {"y": torch.randn(1, 768), "guidance": torch.tensor([3.5])}
    else:
        from comfy_kernel_core_nodes.families.flux.flux2 import Flux2

        params = flux2_params()
        with torch.device("meta"):
            ours = Flux2(params)
        ours.load_state_dict(flux2_state_dict(params, seed=6), assign=True)
        latent, extra = torch.randn(1, 128, 4, 4), {"guidance": torch.tensor([3.5])}
    context = torch.randn(1, 7, params.context_in_dim)
    seen = []

    def post_input(args):
        seen.append(("post_input", sorted(args)))
        return args

    def replace_double(args, extra_args):
        seen.append(("double", sorted(args)))
        return extra_args["original_block"](args)

    def replace_single(args, extra_args):
        seen.append(("single", sorted(args)))
        return extra_args["original_block"](args)

    def after_double(args):
        seen.append(("after_double", args["block_index"]))
        return {"img": args["img"], "txt": args["txt"]}

    def wrapper(executor, *args, **kwargs):
        seen.append(("wrapper",))
        return executor(*args, **kwargs)

    options = {"patches": {"post_input": [post_input], "double_block": [after_double]},
               "patches_replace": {"dit": {("double_block", 1): replace_double, ("single_block", 0): replace_single}}}
    extension.add_wrapper(extension.WrappersMP.DIFFUSION_MODEL, wrapper, options)
    with torch.no_grad():
        plain = ours(latent, torch.tensor([0.6]), context, **extra)
        patched = ours(latent, torch.tensor([0.6]), context, transformer_options=options, **extra)
        skipped = ours(latent, torch.tensor([0.6]), context, transformer_options={"patches_replace": {"dit": {
            ("double_block", 0): lambda args, extra_args: {"img": args["img"], "txt": args["txt"]}}}}, **extra)
    block_args = ["attn_mask", "img", "pe", "transformer_options", "txt", "vec"]
    assert seen == [("wrapper",), ("post_input", ["img", "img_ids", "transformer_options", "txt", "txt_ids"]),
                    ("after_double", 0), ("double", block_args), ("after_double", 1),
                    ("single", ["attn_mask", "img", "pe", "transformer_options", "vec"])]
    assert torch.equal(plain, patched)
    assert not torch.allclose(plain, skipped)  # what SkipLayerGuidanceDiT does: a block left out changes the output


@pytest.mark.parametrize("style", ["diffusers", "onetrainer", "kohya", "bfl"])
def test_lora_names_of_every_trainer_patch_the_same_weights(tmp_path, style):
    """Flux LoRAs in diffusers' names (q, k, v and the MLP input as slices of the fused layers), OneTrainer's,
    kohya's and BFL's own names all patch the same weights by B @ A * alpha / rank."""
    from comfy_kernel_core_nodes.model.lora import load_lora_for_models

    params = flux_params()
    hidden, mlp = params.hidden_size, int(params.hidden_size * params.mlp_ratio)
    patcher = load_diffusion_model(str(write(tmp_path / "flux.safetensors", flux_state_dict(params, seed=11))))
    g = torch.Generator().manual_seed(3)
    rank = 4

    def pair(out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(rank, in_features, generator=g), torch.randn(out_features, rank, generator=g) * 0.1

    q, k, v = (pair(hidden, hidden) for _ in range(3))
    proj_mlp, txt_k = pair(mlp, hidden), pair(hidden, hidden)
    # what the fused layers receive: [q; k; v] rows of double block 0's image qkv, single block 1's linear1 rows
    fused_qkv = torch.cat([b @ a for a, b in (q, k, v)])
    fused_linear1 = torch.cat([b @ a for a, b in (q, k, v, proj_mlp)])
    if style in ("diffusers", "onetrainer"):
        names = {"transformer_blocks.0.attn.to_q": q, "transformer_blocks.0.attn.to_k": k,
                 "transformer_blocks.0.attn.to_v": v, "transformer_blocks.0.attn.add_k_proj": txt_k,
                 "single_transformer_blocks.1.attn.to_q": q, "single_transformer_blocks.1.attn.to_k": k,
                 "single_transformer_blocks.1.attn.to_v": v, "single_transformer_blocks.1.proj_mlp": proj_mlp}
        lora = {}
        for name, (a, b) in names.items():
            key = "transformer." + name if style == "diffusers" else "lora_transformer_" + name.replace(".", "_")
            down, up = (".lora_A.weight", ".lora_B.weight") if style == "diffusers" else (".lora_down.weight",
                                                                                           ".lora_up.weight")
            lora[key + down], lora[key + up] = a, b
    else:
        def fused(name: str, delta: torch.Tensor) -> dict[str, torch.Tensor]:
            # the fused delta as factors identity x delta (rank = the input width, alpha the same: scale 1)
            eye = torch.eye(delta.shape[1])
            key = ("lora_unet_" + name.replace(".", "_")) if style == "kohya" else "diffusion_model." + name
            down, up = (".lora_down.weight", ".lora_up.weight") if style == "kohya" else (".lora_A.weight",
                                                                                          ".lora_B.weight")
            return {key + down: eye, key + up: delta, key + ".alpha": torch.tensor(float(delta.shape[1]))}

        txt = torch.zeros(3 * hidden, hidden)
        txt[hidden:2 * hidden] = txt_k[1] @ txt_k[0]
        lora = {**fused("double_blocks.0.img_attn.qkv", fused_qkv), **fused("double_blocks.0.txt_attn.qkv", txt),
                **fused("single_blocks.1.linear1", fused_linear1)}
    patched, _ = load_lora_for_models(patcher, None, lora, 1.0, 0.0)
    with torch.no_grad(), patcher.use() as plain_net:
        base_img = plain_net.diffusion_model.double_blocks[0].img_attn.qkv.weight.float().clone()
        base_txt = plain_net.diffusion_model.double_blocks[0].txt_attn.qkv.weight.float().clone()
        base_single = plain_net.diffusion_model.single_blocks[1].linear1.weight.float().clone()
    with torch.no_grad(), patched.use() as net:
        img = net.diffusion_model.double_blocks[0].img_attn.qkv.weight.float() - base_img
        txt_delta = net.diffusion_model.double_blocks[0].txt_attn.qkv.weight.float() - base_txt
        single = net.diffusion_model.single_blocks[1].linear1.weight.float() - base_single
    assert torch.allclose(img, fused_qkv, atol=1e-4)
    assert torch.allclose(txt_delta[hidden:2 * hidden], txt_k[1] @ txt_k[0], atol=1e-4)
    assert txt_delta[:hidden].abs().max() == 0 and txt_delta[2 * hidden:].abs().max() == 0
    assert torch.allclose(single[: 3 * hidden + mlp], fused_linear1, atol=1e-4)


def test_diffusers_layout_file_is_read_as_flux(tmp_path):
    """A Flux.1 transformer saved by diffusers (q, k, v and the MLP input separate, (scale, shift) at the end)
    is detected and gives diffusers' output on the same weights."""
    diffusers = pytest.importorskip("diffusers")
    params = flux_params()
    oracle = diffusers.FluxTransformer2DModel(
        in_channels=64, num_layers=params.depth, num_single_layers=params.depth_single_blocks,
        attention_head_dim=128, num_attention_heads=params.num_heads, joint_attention_dim=params.context_in_dim,
        pooled_projection_dim=768, guidance_embeds=True).eval()
    g = torch.Generator().manual_seed(13)
    with torch.no_grad():
        for p in oracle.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5)
    sd = {k: v.contiguous() for k, v in oracle.state_dict().items()}
    patcher = load_diffusion_model(str(write(tmp_path / "diffusion_pytorch_model.safetensors", sd)))
    config = patcher.model.model_config.unet_config
    assert patcher.model.model_config.family == "flux" and config["depth"] == params.depth
    assert config["hidden_size"] == params.hidden_size and config["guidance_embed"]
    latent, t, context, pooled, guidance = _inputs(params, 3)
    with torch.no_grad(), patcher.use() as bound:
        out = bound.diffusion_model(latent, t, context, y=pooled, guidance=guidance)
        tokens = diffusers.FluxPipeline._pack_latents(latent, 1, 16, 8, 8)
        ids = diffusers.FluxPipeline._prepare_latent_image_ids(1, 4, 4, "cpu", torch.float32)
        ref = oracle(hidden_states=tokens, encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                     img_ids=ids, txt_ids=torch.zeros(context.shape[1], 3), guidance=guidance).sample
        ref = diffusers.FluxPipeline._unpack_latents(ref, 64, 64, 8)
    assert rel_error(out, ref) < 1e-4
