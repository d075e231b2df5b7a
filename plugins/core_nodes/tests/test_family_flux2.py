"""Flux.2: detection, the transformer and the VAE against diffusers, klein's Qwen3 text encoder against
transformers, its latent and scheduler nodes.

Random weights in the original (Black Forest Labs) key layout; see _flux.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _flux import (  # noqa: E402
    flux2_params,
    flux2_state_dict,
    flux2_vae_state_dict,
    klein_encoder_config,
    klein_encoder_state_dict,
    mistral_encoder_state_dict,
    rel_error,
    tekken_json,
)
from _random_weights import write  # noqa: E402

from comfy_kernel_core_nodes.model.base import ModelType  # noqa: E402
from comfy_kernel_core_nodes.model.loading import (  # noqa: E402
    UnsupportedModel,
    load_checkpoint,
    load_clip,
    load_diffusion_model,
    load_vae,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("guidance", [True, False])
def test_transformer_is_detected_and_matches_diffusers(tmp_path, guidance):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers

    params = flux2_params(guidance_embed=guidance)
    sd = flux2_state_dict(params, seed=1)
    patcher = load_diffusion_model(str(write(tmp_path / "flux2.safetensors", sd)))
    model = patcher.model
    assert model.model_config.family == "flux2" and model.model_type == ModelType.FLUX
    config = model.model_config.unet_config
    assert (config["hidden_size"], config["depth"], config["depth_single_blocks"], config["mlp_ratio"],
            config["context_in_dim"], config["guidance_embed"]) == (256, 2, 2, 3.0, 384, guidance)
    assert model.weights.keys == frozenset(sd) and model.latent_format.latent_channels == 128
    oracle = diffusers.Flux2Transformer2DModel(
        in_channels=128, num_layers=2, num_single_layers=2, attention_head_dim=128, num_attention_heads=2,
        joint_attention_dim=384, mlp_ratio=3.0, guidance_embeds=guidance).eval()
    missing, unexpected = oracle.load_state_dict(convert_flux2_transformer_checkpoint_to_diffusers(dict(sd)),
                                                 strict=False)
    assert not missing and not unexpected
    g = torch.Generator().manual_seed(2)
    latent, ref = torch.randn(1, 128, 4, 6, generator=g), torch.randn(1, 128, 4, 4, generator=g)
    context, t = torch.randn(1, 7, 384, generator=g), torch.tensor([0.45])
    guidance_value = torch.tensor([4.0]) if guidance else None
    with torch.no_grad(), patcher.use() as bound:
        out = bound.diffusion_model(latent, t, context, guidance=guidance_value, ref_latents=[ref])
        # the BFL layout: tokens row by row, ids (t, h, w, l); the reference at t = 10; text ids (0, 0, 0, i)
        tokens = torch.cat([latent.flatten(2).transpose(1, 2), ref.flatten(2).transpose(1, 2)], dim=1)
        ids = [(0, h, w, 0) for h in range(4) for w in range(6)] + [(10, h, w, 0) for h in range(4) for w in range(4)]
        txt_ids = torch.tensor([(0, 0, 0, i) for i in range(7)], dtype=torch.float32)
        expected = oracle(hidden_states=tokens, encoder_hidden_states=context, timestep=t, guidance=guidance_value,
                          img_ids=torch.tensor(ids, dtype=torch.float32), txt_ids=txt_ids).sample
        expected = expected[:, :24].transpose(1, 2).reshape(1, 128, 4, 6)
    assert rel_error(out, expected) < 1e-4


@pytest.mark.parametrize("widths", [None, (96, 192, 384, 384)])
def test_vae_matches_diffusers(tmp_path, widths):
    """The Flux.2 VAE, and one with a narrower decoder than encoder (as BFL's small decoder; widths read
    from the keys)."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = flux2_vae_state_dict(decoder_widths=widths)
    vae = load_vae(str(write(tmp_path / "flux2-vae.safetensors", sd)))
    assert vae.latent_channels == 128 and vae.downscale_ratio == 16
    config = dict(latent_channels=32, block_out_channels=(128, 256, 512, 512), decoder_block_out_channels=widths)
    oracle = diffusers.AutoencoderKLFlux2(**config).eval()
    converted = convert_ldm_vae_checkpoint({k: v for k, v in sd.items() if not k.startswith("bn.")},
                                           dict(oracle.config))
    converted.update({k: v for k, v in sd.items() if k.startswith("bn.")})
    missing, _ = oracle.load_state_dict(converted, strict=False)
    assert [k for k in missing if "num_batches" not in k] == []
    image = torch.rand(1, 32, 48, 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        latent = vae.encode(image)
        moments = oracle.encode(image.movedim(-1, 1) * 2 - 1).latent_dist.mean
        patched = diffusers.Flux2Pipeline._patchify_latents(moments)
        mean = oracle.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(oracle.bn.running_var.view(1, -1, 1, 1) + oracle.config.batch_norm_eps)
        expected = (patched - mean) / std
        decoded = vae.decode(latent)
        ref_image = oracle.decode(diffusers.Flux2Pipeline._unpatchify_latents(latent * std + mean)).sample
    assert latent.shape == (1, 128, 2, 3)
    assert rel_error(latent, expected) < 1e-4
    assert float((decoded - ((ref_image + 1) / 2).clamp(0, 1).movedim(1, -1)).abs().max()) < 1e-4


def test_empty_latent_and_scheduler_nodes():
    from comfy_kernel_core_nodes.families.flux.nodes import EmptyFlux2LatentImage, Flux2Scheduler

    latent = EmptyFlux2LatentImage.execute(64, 96, 2).result[0]["samples"]
    assert latent.shape == (2, 128, 6, 4) and latent.abs().sum() == 0
    sigmas = Flux2Scheduler.execute(4, 1024, 1024).result[0]
    # 4096 tokens, 4 steps: mu interpolated between the 10- and 200-step lines; sigma = e^mu / (e^mu + 1/t - 1)
    m200, m10 = 0.00016927 * 4096 + 0.45666666, 8.73809524e-05 * 4096 + 1.89833333
    mu = (m200 - m10) / 190.0 * 4 + m200 - 200.0 * (m200 - m10) / 190.0
    t = torch.linspace(1, 0, 5)
    expected = torch.exp(torch.tensor(mu)) / (torch.exp(torch.tensor(mu)) + (1 / t - 1))
    assert sigmas.shape == (5,) and float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0
    assert torch.allclose(sigmas, expected.float(), atol=1e-6)
    assert Flux2Scheduler.execute(4, 3000, 2000).result[0][1] > sigmas[1]  # more tokens, more shift (> 4300)


def test_klein_text_encoder_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    sd = klein_encoder_state_dict(dtype=torch.float16)  # stored as the CPU stores text encoders; computed in fp32
    clip = load_clip([str(write(tmp_path / "qwen_3_4b.safetensors", sd))], "flux2")
    assert "qwen3_4b.transformer.model.layers.27.mlp.up_proj.weight" in clip.cond_stage_model.state_dict_keys()
    tokens = clip.tokenize("a red fox")
    ids = [t for t, _ in tokens["qwen3_4b"][0]]
    # Klein's chat turn with an empty thinking block, padded with <|endoftext|> to 512 tokens
    assert ids[:3] == [151644, 872, 198] and len(ids) == 512 and ids[-1] == 151643
    length = ids.index(151643)
    cond = clip.encode_from_tokens_scheduled(tokens)
    context, options = cond[0]
    assert context.shape == (1, 512, 3 * 64) and options["attention_mask"][0].tolist() == [1] * length + [0] * (
        512 - length)

    config = klein_encoder_config()
    hf = transformers.Qwen3Model(transformers.Qwen3Config(
        vocab_size=config.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=28,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-6, rope_theta=1e6,
        attn_implementation="eager", max_position_embeddings=1024)).eval()
    missing, unexpected = hf.load_state_dict({k[len("model."):]: v.float() for k, v in sd.items()},
                                             strict=False)
    assert not missing and not unexpected
    with torch.no_grad():
        out = hf(input_ids=torch.tensor([ids]), attention_mask=options["attention_mask"], output_hidden_states=True)
    expected = torch.cat([out.hidden_states[i] for i in (9, 18, 27)], dim=-1)
    assert rel_error(context, expected) < 1e-4


def test_klein_needs_the_layers_it_reads_and_mistral_needs_its_tokenizer(tmp_path):
    clip = load_clip([str(write(tmp_path / "short.safetensors", klein_encoder_state_dict(layers=12)))], "flux2")
    with pytest.raises(ValueError, match="reads layers"):
        clip.encode_from_tokens_scheduled(clip.tokenize("x"))
    sd = mistral_encoder_state_dict(layers=1)
    del sd["tekken_model"]
    with pytest.raises(UnsupportedModel, match="tekken_model"):
        load_clip([str(write(tmp_path / "mistral_3_small_flux2_bf16.safetensors", sd))], "flux2")


def test_tekken_tokenizer_merges_by_rank():
    from comfy_kernel_core_nodes.families.flux.flux2_text import TekkenTokenizer

    tekken = TekkenTokenizer(tekken_json())
    # ids: special tokens by rank; bytes and merges at rank + 100. " red" stops at " "+"re"+"d" (no " re" or
    # "red" token to merge into), " fox" merges fo -> fox -> " fox"
    assert tekken.encode("[INST]the red fox[/INST]") == [3, 357, 132, 359, 200, 365, 4]
    assert tekken.encode("a 12345") == [197, 132, 149, 150, 151, 152, 153]  # digits in runs of three


@pytest.mark.parametrize("pruned", [False, True])
def test_mistral_text_encoder_matches_transformers(tmp_path, pruned):
    """Mistral's states entering layers 10, 20, 30; a pruned 30-layer file (no final norm) gives the state after
    its last layer for 30."""
    transformers = pytest.importorskip("transformers")
    sd = mistral_encoder_state_dict()
    stored = sd
    if pruned:
        stored = {k: v for k, v in sd.items() if not k.startswith(("model.layers.30.", "model.norm."))}
    clip = load_clip([str(write(tmp_path / "mistral_3_small_flux2_bf16.safetensors", stored))], "flux2")
    tokens = clip.tokenize("the red fox")
    ids = [t for t, _ in tokens["mistral3_24b"][0]]
    assert ids[:2] == [1, 17] and ids[-5:] == [132, 359, 200, 365, 4]  # start, [SYSTEM_PROMPT] ... [/INST]
    context, options = clip.encode_from_tokens_scheduled(tokens)[0]
    assert context.shape == (1, len(ids), 3 * 64)
    hf = transformers.MistralModel(transformers.MistralConfig(
        vocab_size=sd["model.embed_tokens.weight"].shape[0], hidden_size=64, intermediate_size=128,
        num_hidden_layers=31, num_attention_heads=2, num_key_value_heads=1, head_dim=128, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1e9}, sliding_window=None,
        attn_implementation="eager", max_position_embeddings=1024)).eval()
    missing, unexpected = hf.load_state_dict({k[len("model."):]: v.float() for k, v in sd.items()
                                              if k.startswith("model.")}, strict=False)
    assert not missing and not unexpected
    with torch.no_grad():
        out = hf(input_ids=torch.tensor([ids]), output_hidden_states=True)
    expected = torch.cat([out.hidden_states[i] for i in (10, 20, 30)], dim=-1)
    assert rel_error(context, expected) < 1e-4


def test_flux2_context_is_padded_in_front_to_512_tokens(tmp_path):
    patcher = load_diffusion_model(str(write(tmp_path / "flux2.safetensors", flux2_state_dict(flux2_params()))))
    model = patcher.model
    assert model.model_sampling.shift == 2.02
    context = torch.randn(1, 40, 384)
    conds = model.extra_conds(cross_attn=context, noise=torch.zeros(1, 128, 2, 2), device="cpu")
    padded = conds["c_crossattn"].cond
    assert padded.shape == (1, 512, 384) and padded[:, :472].abs().sum() == 0
    assert torch.equal(padded[:, 472:], context)


def test_diffusers_lora_names_patch_the_fused_layers(tmp_path):
    """Flux.2 LoRAs in diffusers' names (ai-toolkit's): q, k, v patch their thirds of the image qkv, a single
    block's fused projection and the shared modulation patch whole layers."""
    from comfy_kernel_core_nodes.model.lora import load_lora_for_models

    params = flux2_params()
    hidden = params.hidden_size
    patcher = load_diffusion_model(str(write(tmp_path / "flux2.safetensors", flux2_state_dict(params, seed=12))))
    g = torch.Generator().manual_seed(4)

    def pair(out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(2, in_features, generator=g), torch.randn(out_features, 2, generator=g) * 0.1

    with torch.no_grad(), patcher.use() as plain:
        net = plain.diffusion_model
        base = {"qkv": net.double_blocks[1].img_attn.qkv.weight.float().clone(),
                "linear1": net.single_blocks[0].linear1.weight.float().clone(),
                "mod": net.single_stream_modulation.lin.weight.float().clone()}
    k = pair(hidden, hidden)
    linear1 = pair(base["linear1"].shape[0], hidden)
    mod = pair(base["mod"].shape[0], hidden)
    lora = {}
    for name, (a, b) in {"transformer_blocks.1.attn.to_k": k,
                         "single_transformer_blocks.0.attn.to_qkv_mlp_proj": linear1,
                         "single_stream_modulation.linear": mod}.items():
        lora[f"transformer.{name}.lora_A.weight"], lora[f"transformer.{name}.lora_B.weight"] = a, b
    patched, _ = load_lora_for_models(patcher, None, lora, 0.5, 0.0)
    with torch.no_grad(), patched.use() as bound:
        net = bound.diffusion_model
        qkv = net.double_blocks[1].img_attn.qkv.weight.float() - base["qkv"]
        assert torch.allclose(qkv[hidden:2 * hidden], 0.5 * k[1] @ k[0], atol=1e-4)
        assert qkv[:hidden].abs().max() == 0 and qkv[2 * hidden:].abs().max() == 0
        assert torch.allclose(net.single_blocks[0].linear1.weight.float() - base["linear1"],
                              0.5 * linear1[1] @ linear1[0], atol=1e-4)
        assert torch.allclose(net.single_stream_modulation.lin.weight.float() - base["mod"],
                              0.5 * mod[1] @ mod[0], atol=1e-4)


def test_single_file_klein_checkpoint_gives_model_clip_and_vae(tmp_path):
    from _flux import prefixed

    params = flux2_params(context_in_dim=3 * 64, guidance_embed=False)
    tensors = {**prefixed(flux2_state_dict(params, dtype=torch.bfloat16), "model.diffusion_model."),
               **prefixed(klein_encoder_state_dict(), "text_encoders.qwen3_4b.transformer."),
               **prefixed(flux2_vae_state_dict(dtype=torch.bfloat16), "vae.")}
    model, clip, vae = load_checkpoint(str(write(tmp_path / "flux-2-klein-tiny.safetensors", tensors)))
    assert model.model.model_config.family == "flux2" and vae.latent_channels == 128
    assert "qwen3_4b.transformer.model.layers.27.mlp.up_proj.weight" in clip.cond_stage_model.state_dict_keys()
    context = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a cat"))[0][0]
    assert context.shape == (1, 512, 3 * 64)
