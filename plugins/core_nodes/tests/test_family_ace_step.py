"""ACE-Step 1.5: detection and loading of its files, the networks against diffusers, the text side.

Random-weight files in ComfyUI's key layouts (see _files_ace_step.py). The
DiT, the condition encoder, the audio-code detokenizer and the VAE are
compared with diffusers' ACE-Step 1.5 and Oobleck implementations (weights
renamed to theirs) in float32.
"""

from __future__ import annotations

import re

import pytest
import torch
from _files_ace_step import (
    DIT,
    DIT_XL,
    LM,
    TEXT,
    VAE,
    checkpoint,
    dit,
    dit_sd,
    dit_xl,
    language_model,
    text_encoder,
    text_sd,
    vae,
    vae_sd,
)

from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM
from comfy_kernel_core_nodes.components.oobleck_vae import OobleckVAE, oobleck_layout
from comfy_kernel_core_nodes.families.ace_step import detect
from comfy_kernel_core_nodes.families.ace_step.models import AceStep15Config, AceStep15Model
from comfy_kernel_core_nodes.families.ace_step.silence import silence_latent
from comfy_kernel_core_nodes.families.ace_step.text import AceStep15Tokenizer, metas_yaml, sample_audio_codes
from comfy_kernel_core_nodes.families.ace_step.transformer import AceStep15
from comfy_kernel_core_nodes.model import loading, ops
from comfy_kernel_core_nodes.model.files import tensor_shapes

pytestmark = pytest.mark.timeout(600)


def _file_keys(path, prefix: str = "") -> set[str]:
    return {k[len(prefix):] for k in tensor_shapes(str(path)) if k.startswith(prefix)}


# -- detection and loading ------------------------------------------------------------------------


@pytest.mark.parametrize("make, layout", [(dit, DIT), (dit_xl, DIT_XL)])
def test_dit_files_are_detected_with_their_layout(make, layout):
    path = str(make())
    config = detect.transformer_config(tensor_shapes(path))
    assert config["audio_model"] == "ace1.5"
    for field in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                  "encoder_hidden_size", "encoder_heads", "encoder_kv_heads", "text_hidden_dim", "lyric_layers",
                  "timbre_layers", "tokenizer_layers", "detokenizer_layers", "in_channels", "out_channels"):
        assert config[field] == getattr(layout, field), field
    model_config, prefix = loading.model_config(path)
    assert isinstance(model_config, AceStep15Config) and prefix == ""
    assert model_config.sampling_settings == {"multiplier": 1.0, "shift": 3.0}


@pytest.mark.parametrize("make", [dit, dit_xl])
def test_dit_loads_every_key_of_the_file(make):
    path = make()
    model = loading.load_diffusion_model(str(path)).model
    assert isinstance(model, AceStep15Model)
    network = model.loaded_module
    assert set(network.state_dict()) == _file_keys(path)


def test_checkpoint_gives_model_clip_and_vae():
    path = checkpoint()
    patcher, clip, audio_vae = loading.load_checkpoint(str(path))
    assert set(patcher.model.loaded_module.state_dict()) == _file_keys(path, "model.diffusion_model.")
    encoders = clip.cond_stage_model.loaded_module
    assert set(encoders.state_dict()) == {k.replace("text_encoders.", "", 1) for k in _file_keys(path)
                                          if k.startswith("text_encoders.")}
    assert encoders.lm_name == "qwen3_2b"
    assert audio_vae.audio_sample_rate == 48000 and audio_vae.downscale_ratio == 1920
    assert set(audio_vae.first_stage_model.loaded_module.state_dict()) == _file_keys(path, "vae.")


@pytest.mark.parametrize("order", [0, 1])
def test_dual_clip_ace_takes_the_encoder_and_the_language_model_in_either_order(order):
    paths = [str(text_encoder()), str(language_model())]
    clip = loading.load_clip(paths if order == 0 else paths[::-1], "ace")
    encoders = clip.cond_stage_model.loaded_module
    keys = set(encoders.state_dict())
    assert keys == {"qwen3_06b.transformer." + k for k in _file_keys(text_encoder())} | \
        {"qwen3_2b.transformer." + k for k in _file_keys(language_model())}
    assert encoders.text.config.vocab_size == 151669 and encoders.lm.config.vocab_size == 217204
    shapes = tensor_shapes(paths[1])
    assert detect.ace15_text_prefix(shapes) == "" and detect.is_audio_lm(shapes, "")


def test_other_qwen3_files_are_not_claimed():
    from dataclasses import replace

    shapes = {k: tuple(v.shape) for k, v in text_sd(replace(TEXT, vocab_size=151936)).items()}
    assert detect.qwen3_prefix(shapes) == "" and detect.ace15_text_prefix(shapes) is None


def test_vae_file_is_detected_and_its_strides_read():
    path = str(vae())
    shapes = tensor_shapes(path)
    assert detect.is_ace15_vae(shapes, "")
    assert oobleck_layout(shapes) == VAE
    audio_vae = loading.load_vae(path)
    assert audio_vae.audio_sample_rate == 48000 and audio_vae.latent_channels == 64
    assert set(audio_vae.first_stage_model.loaded_module.state_dict()) == _file_keys(path)
    stable_audio = dict(shapes)
    stable_audio["decoder.layers.1.layers.1.weight_v"] = shapes["decoder.layers.1.layers.1.weight_v"][:2] + (16,)
    assert not detect.is_ace15_vae(stable_audio, "")


def test_lora_names_of_ace_step_trainers_reach_the_dit():
    """PEFT names relative to the DiT (ACE-Step's trainer), LyCORIS names and the plain model names."""
    from comfy_kernel_core_nodes.model.lora import load_lora, model_lora_keys_unet

    model = loading.load_diffusion_model(str(dit())).model
    key_map = model_lora_keys_unet(model)
    target = "diffusion_model.decoder.layers.1.self_attn.q_proj.weight"
    down, up = torch.zeros(2, 256), torch.zeros(256, 2)
    for lora in ({"base_model.model.layers.1.self_attn.q_proj.lora_A.weight": down,
                  "base_model.model.layers.1.self_attn.q_proj.lora_B.weight": up},
                 {"lycoris_layers_1_self_attn_q_proj.lora_down.weight": down,
                  "lycoris_layers_1_self_attn_q_proj.lora_up.weight": up},
                 {"diffusion_model.decoder.layers.1.self_attn.q_proj.lora_down.weight": down,
                  "diffusion_model.decoder.layers.1.self_attn.q_proj.lora_up.weight": up}):
        assert set(load_lora(lora, key_map, log_missing=False)) == {target}, sorted(lora)


# -- the networks against diffusers ---------------------------------------------------------------

diffusers = pytest.importorskip("diffusers")


def _ours(config, seed: int = 21) -> AceStep15:
    sd = {k: v.float() for k, v in dit_sd(config, seed).items()}
    with torch.device("meta"):
        net = AceStep15(config, ops.plain)
    net.load_state_dict(sd, assign=True)
    return net.eval()


def _attention_names(key: str) -> str:
    for ours, theirs in (("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"), ("o_proj", "to_out.0"),
                         ("q_norm", "norm_q"), ("k_norm", "norm_k")):
        key = re.sub(rf"(self_attn|cross_attn)\.{ours}\.", rf"\1.{theirs}.", key)
    return key


def _part(net: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {_attention_names(k[len(prefix):]): v for k, v in net.state_dict().items() if k.startswith(prefix)}


@pytest.mark.parametrize("config", [DIT, DIT_XL], ids=["turbo", "xl"])
def test_dit_matches_diffusers(config):
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    ours = _ours(config)
    theirs = AceStepTransformer1DModel(
        hidden_size=config.hidden_size, intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads, head_dim=128,
        in_channels=config.in_channels, audio_acoustic_hidden_dim=config.out_channels, patch_size=2,
        encoder_hidden_size=config.encoder_hidden_size).eval()
    sd = {k.replace("proj_in.1.", "proj_in_conv.").replace("proj_out.1.", "proj_out_conv."): v
          for k, v in _part(ours, "decoder.").items()}
    missing, unexpected = theirs.load_state_dict(sd, strict=False)
    assert not missing and not unexpected
    g = torch.Generator().manual_seed(0)
    frames = 301  # odd (padded to whole patches); 151 patches, past the 128-patch sliding window
    x = torch.randn(2, frames, 64, generator=g)
    context_latents = torch.randn(2, frames, 128, generator=g)
    condition = torch.randn(2, 37, config.encoder_hidden_size, generator=g)
    t = torch.tensor([0.7, 0.2])
    with torch.no_grad():
        expected = theirs(x, t, t, condition, context_latents, return_dict=False)[0]
        got = ours.decoder(x, t, t, condition, context_latents)
    assert got.shape == (2, frames, 64)
    assert torch.allclose(got, expected, atol=2e-4, rtol=1e-3), (got - expected).abs().max()


def test_condition_encoder_matches_diffusers():
    """Lyrics, one timbre reference and the caption joined; lengths within the encoders' 128-token window,
    where diffusers' sliding-window layers and ComfyUI's full attention agree."""
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder

    ours = _ours(DIT)
    theirs = AceStepConditionEncoder(
        hidden_size=256, intermediate_size=512, text_hidden_dim=64, timbre_hidden_dim=64,
        num_lyric_encoder_hidden_layers=1, num_timbre_encoder_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=128).eval()
    missing, unexpected = theirs.load_state_dict(_part(ours, "encoder."), strict=False)
    assert set(missing) == {"null_condition_emb", "silence_latent"} and not unexpected
    g = torch.Generator().manual_seed(1)
    text, lyrics = torch.randn(1, 23, 64, generator=g), torch.randn(1, 41, 64, generator=g)
    refer = silence_latent(100).movedim(-1, -2)
    with torch.no_grad():
        expected, mask = theirs(text, torch.ones(1, 23), lyrics, torch.ones(1, 41), refer,
                                torch.zeros(1, dtype=torch.long))
        got = ours.encoder(text, lyrics, refer)
    assert mask.all() and got.shape == (1, 41 + 1 + 23, 256)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-3), (got - expected).abs().max()


def test_audio_codes_through_the_detokenizer_match_diffusers():
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        _AceStepResidualFSQ,
    )

    ours = _ours(DIT)
    quantizer = _AceStepResidualFSQ(dim=256).eval()
    quantizer.load_state_dict(_part(ours, "tokenizer.quantizer."))
    detok = AceStepAudioTokenDetokenizer(hidden_size=256, intermediate_size=768, num_attention_pooler_hidden_layers=2,
                                         num_attention_heads=16, num_key_value_heads=8).eval()
    missing, unexpected = detok.load_state_dict(_part(ours, "detokenizer."), strict=False)
    assert not missing and not unexpected
    codes = torch.tensor([[0, 63999, 35847, 12345, 7]])
    with torch.no_grad():
        expected = detok(quantizer.get_output_from_indices(codes))
        got = ours.lm_hints(23, silence_latent(23).movedim(-1, -2), codes, torch.float32)
    assert got.shape == (1, 23, 64)  # 5 codes give 25 frames, cut to the latent's 23
    assert torch.allclose(got, expected[:, :23], atol=1e-4, rtol=1e-3), (got - expected[:, :23]).abs().max()


def test_reference_pooling_matches_diffusers_and_quantises_to_the_fsq_grid():
    """A reference latent through the audio tokenizer: the attention pooler as diffusers' (one state per 5
    frames), then finite scalar quantisation as ComfyUI's (tanh-bounded levels 8, 8, 8, 5, 5, 5)."""
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepAttentionPooler

    from comfy_kernel_core_nodes.families.ace_step.transformer import FSQ_LEVELS

    ours = _ours(DIT)
    pooler = AceStepAttentionPooler(hidden_size=256, intermediate_size=768, num_attention_pooler_hidden_layers=1,
                                    num_attention_heads=16, num_key_value_heads=8).eval()
    missing, unexpected = pooler.load_state_dict(_part(ours, "tokenizer.attention_pooler."), strict=False)
    assert not missing and not unexpected
    latents = torch.randn(1, 23, 64, generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(latents, (0, 0, 0, 2)).view(1, 5, 5, 64)
    tokenizer = ours.tokenizer
    with torch.no_grad():
        projected = tokenizer.audio_acoustic_proj(padded)
        assert torch.allclose(tokenizer.attention_pooler(projected), pooler(projected), atol=1e-4, rtol=1e-3)
        vectors = tokenizer(latents, 5)
        codes = torch.linalg.lstsq(tokenizer.quantizer.project_out.weight,
                                   (vectors - tokenizer.quantizer.project_out.bias)[0].T).solution.T
    assert vectors.shape == (1, 5, 256)
    levels = torch.tensor(FSQ_LEVELS, dtype=torch.float32)
    steps = (codes + 1) * (levels - 1) / 2  # every code on its level's grid in [-1, 1]
    assert torch.allclose(steps, steps.round(), atol=1e-3) and (codes.abs() <= 1 + 1e-4).all()


def _oobleck_names(key: str) -> str:
    key = re.sub(r"^(encoder|decoder)\.layers\.0\.", r"\1.conv1.", key)
    key = re.sub(r"^(encoder|decoder)\.layers\.6\.", r"\1.snake1.", key)
    key = re.sub(r"^(encoder|decoder)\.layers\.7\.", r"\1.conv2.", key)
    key = re.sub(r"^(encoder|decoder)\.layers\.(\d)\.", lambda m: f"{m[1]}.block.{int(m[2]) - 1}.", key)
    encoder_block = {"0": "res_unit1", "1": "res_unit2", "2": "res_unit3", "3": "snake1", "4": "conv1"}
    decoder_block = {"0": "snake1", "1": "conv_t1", "2": "res_unit1", "3": "res_unit2", "4": "res_unit3"}
    unit = {"0": "snake1", "1": "conv1", "2": "snake2", "3": "conv2"}

    def block(m: re.Match) -> str:
        names = encoder_block if m[1] == "encoder" else decoder_block
        return f"{m[1]}.block.{m[2]}.{names[m[3]]}."

    key = re.sub(r"^(encoder|decoder)\.block\.(\d)\.layers\.(\d)\.", block, key)
    return re.sub(r"(res_unit\d)\.layers\.(\d)\.", lambda m: f"{m[1]}.{unit[m[2]]}.", key)


def test_vae_matches_diffusers_oobleck():
    """diffusers ties the encoder's base width to twice the latent channels (128 and 64 in the released VAE),
    so the shrunk comparison uses 4 latent channels over 8; decoding is also checked at the file's 64."""
    from dataclasses import replace

    from diffusers import AutoencoderOobleck

    for layout, sd in ((replace(VAE, latent_channels=4), None), (VAE, vae_sd())):
        if sd is None:
            sd = {k: v.float() for k, v in vae_sd_for(layout).items()}
        with torch.device("meta"):
            ours = OobleckVAE(layout)
        ours.load_state_dict(sd, assign=True)
        theirs = AutoencoderOobleck(encoder_hidden_size=2 * layout.latent_channels, downsampling_ratios=[2, 4, 4, 6, 10],
                                    channel_multiples=[1, 2, 4, 8, 16], decoder_channels=8,
                                    decoder_input_channels=layout.latent_channels, audio_channels=2,
                                    sampling_rate=48000).eval()
        theirs_sd = {_oobleck_names(k): (v[None, :, None] if k.endswith((".alpha", ".beta")) else v)
                     for k, v in sd.items()}
        matching = layout.channels == 2 * layout.latent_channels
        if not matching:
            theirs_sd = {k: v for k, v in theirs_sd.items() if k.startswith("decoder.")}
        missing, unexpected = theirs.load_state_dict(theirs_sd, strict=False)
        assert not unexpected and all(k.startswith("encoder.") for k in missing) and (matching or missing)
        g = torch.Generator().manual_seed(2)
        audio = torch.randn(1, 2, 1920 * 3, generator=g) * 0.3
        latent = torch.randn(1, layout.latent_channels, 3, generator=g)
        with torch.no_grad():
            if matching:
                mean = theirs.encode(audio).latent_dist.mean
                assert torch.allclose(ours.encode_raw(audio), mean, atol=1e-4, rtol=1e-3)
            got, expected = ours.decode_raw(latent), theirs.decode(latent).sample
        assert got.shape == (1, 2, 1920 * 3)
        error = (got - expected).abs().max() / expected.abs().max()  # ~20 float32 layers deep
        assert error < 1e-4, error


def vae_sd_for(layout) -> dict[str, torch.Tensor]:
    from _random_weights import module_shapes, random_state_dict

    with torch.device("meta"):
        shapes = module_shapes(OobleckVAE(layout))
    return random_state_dict(shapes, 7, torch.float32)


# -- the text side --------------------------------------------------------------------------------


def test_tokenizer_builds_comfyui_prompts():
    yaml = pytest.importorskip("yaml")
    from comfy_kernel_core_nodes.components.llm.tokenizer import qwen_tokenizer

    tokens = AceStep15Tokenizer().tokenize_with_weights(
        " soft piano ", lyrics="[Verse]\nla la", bpm=190, duration=119.2, timesignature=4, language="en",
        keyscale="E minor", seed=5, generate_audio_codes=True, cfg_scale=2.0, temperature=0.85, top_p=0.9, top_k=0)

    def text(key: str) -> str:
        return qwen_tokenizer().decode([t for t, _ in tokens[key][0]])

    metas = {"bpm": 190, "duration": 120, "keyscale": "E minor", "timesignature": 4}
    assert metas_yaml(metas) == yaml.dump(metas, allow_unicode=True, sort_keys=True).strip()
    assert text("qwen3_06b").startswith("# Instruction\nGenerate audio semantic tokens")
    assert "# Caption\nsoft piano\n\n# Metas\n- bpm: 190\n- timesignature: 4\n- keyscale: E minor\n" \
           "- duration: 120 seconds\n" in text("qwen3_06b")
    assert text("lyrics") == "# Languages\nen\n\n# Lyric\n[Verse]\nla la<|endoftext|><|endoftext|>"
    assert "<think>\nbpm: 190\nduration: 120\nkeyscale: E minor\ntimesignature: 4\n</think>" in text("lm_prompt")
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n<|im_end|>\n" in text("lm_prompt_negative")
    assert tokens["lm_metadata"]["min_tokens"] == tokens["lm_metadata"]["max_tokens"] == 600


def _lm() -> DecoderLM:
    with torch.device("meta"):
        lm = DecoderLM(LM)
    lm.load_state_dict({k: v.float() for k, v in text_sd(LM, 23).items()}, assign=True)
    return lm.eval()


def test_cached_steps_match_the_full_forward():
    lm = _lm()
    ids = torch.tensor([[151643, 151643, 10, 20, 30, 40], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        full, _ = lm(lm.embed(ids), attention_mask=mask)
        cache = [[] for _ in lm.model.layers]
        first = lm.step(lm.embed(ids[:, :4]), mask[:, :4], cache)
        second = lm.step(lm.embed(ids[:, 4:5]), mask[:, :5], cache)
        third = lm.step(lm.embed(ids[:, 5:]), mask, cache)
    stepped = torch.cat([first, second, third], dim=1)
    assert torch.allclose(stepped[:, 2:], full[:, 2:], atol=1e-5), (stepped - full)[:, 2:].abs().max()


def test_language_model_samples_audio_codes():
    lm = _lm()
    options = {"min_tokens": 12, "max_tokens": 12, "seed": 3, "cfg_scale": 2.0, "temperature": 0.85, "top_p": 0.9,
               "top_k": 0}
    positive, negative = [10, 20, 30, 40, 50], [10, 20]
    codes = sample_audio_codes(lm, positive, negative, options)
    assert len(codes) == 12 and all(0 <= c < 64000 for c in codes)
    assert sample_audio_codes(lm, positive, negative, options) == codes  # the seed decides
    assert sample_audio_codes(lm, positive, negative, {**options, "seed": 4}) != codes
    greedy = sample_audio_codes(lm, positive, negative, {**options, "temperature": 0.0, "cfg_scale": 1.0,
                                                         "top_k": 5})
    assert len(greedy) == 12 and len(set(greedy)) >= 1


def test_model_inputs_follow_comfyui():
    """Silence as the timbre reference (cut to 750 frames with audio codes, then padded back), the
    lyrics beside the caption, the null condition for an all-zero caption, covers without codes."""
    model = AceStep15Model(AceStep15Config({"audio_model": "ace1.5"}))
    noise = torch.zeros(1, 64, 800)
    common = {"noise": noise, "device": "cpu", "conditioning_lyrics": torch.ones(1, 5, 64)}
    out = model.extra_conds(cross_attn=torch.ones(1, 3, 64), audio_codes=[[1, 2, 3]], **common)
    assert torch.equal(out["refer_audio"].cond, silence_latent(800))
    assert out["audio_codes"].cond.tolist() == [[1, 2, 3]] and "is_covers" not in out
    assert "replace_with_null_embeds" not in out and out["lyric_embed"].cond.shape == (1, 5, 64)
    out = model.extra_conds(cross_attn=torch.zeros(1, 3, 64), **common)
    assert out["replace_with_null_embeds"].cond is True and out["is_covers"].cond is False
    reference = torch.randn(1, 64, 300)
    out = model.extra_conds(cross_attn=torch.ones(1, 3, 64), reference_audio_timbre_latents=[reference], **common)
    assert out["is_covers"].cond is True and "audio_codes" not in out
    assert torch.equal(out["refer_audio"].cond[:, :, :300], reference)
    assert torch.equal(out["refer_audio"].cond[:, :, 300:], silence_latent(800)[:, :, 300:])
