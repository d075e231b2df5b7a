"""LTX-2.3 against diffusers: the transformer with gated attention, text modulation and split rotary positions,
the text connectors the diffusion model keeps; detection of the 2.3 key layout.

diffusers is a test-only oracle (the ``test`` extra). Forward passes run small
widths in fp32 (to 1e-4 relative).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from _oracle import close, randomize
from test_family_ltx2 import _transformer_to_diffusers

from comfy_kernel_core_nodes.families.ltx2.connectors import Connector
from comfy_kernel_core_nodes.families.ltx2.detect import transformer_config
from comfy_kernel_core_nodes.families.ltx2.transformer import LTX2Config, LTX2Transformer
from comfy_kernel_core_nodes.model import ops

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

#: LTX-2.3's layout at 64 (video) / 32 (audio) wide streams of 4 heads, two blocks, no caption projection
CONFIG_23 = LTX2Config(in_channels=16, out_channels=16, dim=64, heads=4, audio_in_channels=16, audio_out_channels=16,
                       audio_dim=32, audio_heads=4, caption_channels=0, num_layers=2, gated_attention=True,
                       prompt_modulation=True, prompt_adaln=True, caption_projection=False, cross_timestep=True,
                       rope_split=True)


def _to_diffusers(key: str) -> str:
    return _transformer_to_diffusers(key.replace("prompt_adaln_single.", "prompt_adaln."))


def _pair(config: LTX2Config, **extra):
    ours = LTX2Transformer(config).eval()
    sd = randomize(ours)
    ref = diffusers.LTX2VideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=16, cross_attention_dim=64,
        audio_in_channels=16, audio_out_channels=16, audio_num_attention_heads=4, audio_attention_head_dim=8,
        audio_cross_attention_dim=32, num_layers=2, gated_attn=True, cross_attn_mod=True, audio_gated_attn=True,
        audio_cross_attn_mod=True, use_prompt_embeddings=False, rope_type="split", **extra).eval()
    ref.load_state_dict({_to_diffusers(k): v for k, v in sd.items()}, strict=True)
    return ours, ref


#: LTX-2.5's differences: no timestep embedding for the text modulation, no biases in the video feed-forward
CONFIG_25 = replace(CONFIG_23, prompt_adaln=False, ff_bias=False)


@pytest.mark.parametrize(("version", "per_token"), [("2.3", False), ("2.3", True), ("2.5", True)])
def test_ltx23_transformer_matches_diffusers(version, per_token):
    """diffusers configured as LTX-2.3 (gates, cross-attention modulation, no caption projection, split rotary)
    and run as its 2.3 pipelines run it (each stream's sigma for the text modulation, the other stream's for the
    cross-modal one); per token: the first latent frame kept (timestep 0) and the text padding masked out.
    LTX-2.5's static text modulation and bias-free video feed-forward too."""
    if version == "2.3":
        ours, ref = _pair(CONFIG_23)
    else:
        ours, ref = _pair(CONFIG_25, use_prompt_adaln_single=False, ff_bias=False)
    torch.manual_seed(7)
    frames, height, width, audio_frames = 2, 3, 2, 5
    x, a = torch.randn(1, frames * height * width, 16), torch.randn(1, audio_frames, 16)
    context, audio_context = torch.randn(1, 7, 64), torch.randn(1, 7, 32)
    t, audio_t = torch.tensor([600.0]), torch.tensor([400.0])
    mask = None
    if per_token:
        t = torch.full((1, frames * height * width), 600.0)
        t[:, : height * width] = 0.0
        mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        video, audio = ours.forward_tokens(x, a, context, audio_context, t, audio_t, (frames, height, width), 24.0,
                                           context_mask=mask, audio_context_mask=mask)
        ref_video, ref_audio = ref(hidden_states=x, audio_hidden_states=a, encoder_hidden_states=context,
                                   audio_encoder_hidden_states=audio_context, timestep=t, audio_timestep=audio_t,
                                   sigma=t.amax(dim=-1), audio_sigma=audio_t.amax(dim=-1),
                                   encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
                                   num_frames=frames, height=height, width=width, fps=24.0,
                                   audio_num_frames=audio_frames, use_cross_timestep=True, return_dict=False)
    close(video, ref_video)
    close(audio, ref_audio)


def test_connector_with_gates_matches_diffusers():
    """LTX-2.3's connector (gated attention, 4 heads of 16, split rotary): the prompt's 5 tokens followed by
    registers up to 1024, against diffusers' connector given the prompt padded on the right and its mask."""
    from diffusers.pipelines.ltx2.connectors import LTX2ConnectorTransformer1d

    ours = Connector(ops.plain, 64, 2, 128, heads=4, gated=True).eval()
    sd = randomize(ours)
    ref = LTX2ConnectorTransformer1d(num_attention_heads=4, attention_head_dim=16, num_layers=2, rope_type="split",
                                     gated_attention=True).eval()
    names = {"transformer_1d_blocks": "transformer_blocks", "attn1.q_norm": "attn1.norm_q",
             "attn1.k_norm": "attn1.norm_k"}

    def rename(key: str) -> str:
        for mine, theirs in names.items():
            key = key.replace(mine, theirs)
        return key

    ref.load_state_dict({rename(k): v for k, v in sd.items()}, strict=True)
    for module in ref.modules():
        if hasattr(module, "norm_q"):
            module.norm_q.eps = module.norm_k.eps = 1e-5
    torch.manual_seed(3)
    prompt = torch.randn(1, 5, 64)
    padded = torch.cat([prompt, torch.zeros(1, 1019, 64)], dim=1)
    bias = torch.cat([torch.zeros(1, 5), torch.full((1, 1019), -1e30)], dim=1).view(1, 1, 1, -1)
    with torch.no_grad():
        out = ours(prompt)
        expected, _ = ref(padded, bias)
    assert out.shape == (1, 1024, 64)
    close(out, expected)


def _shapes(config: LTX2Config, connector: bool = True) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = LTX2Transformer(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_ltx23_layout_is_read_from_the_keys():
    """Gates, text modulation and its embedding, no caption projection, the connectors' depth, registers and
    heads; the rotary layout comes from the file's metadata when it loads."""
    config = LTX2Config(dim=128, heads=32, audio_dim=64, audio_heads=32, caption_channels=0, num_layers=2,
                        gated_attention=True, prompt_modulation=True, prompt_adaln=True, caption_projection=False,
                        cross_timestep=True, connector_layers=3, connector_registers=128, connector_heads=4,
                        audio_connector_heads=2, connector_gated=True)
    unet = transformer_config(_shapes(config))
    assert unet["caption_channels"] is None and unet["gated_attention"] and unet["prompt_adaln"]
    assert unet["connector"] == {"layers": 3, "registers": 128, "heads": 4, "audio_heads": 2, "gated": True}
    assert LTX2Config.from_unet_config(unet) == config
    assert LTX2Config.from_unet_config({**unet, "rope_type": "split"}).rope_split


def _vocoder_to_diffusers(key: str) -> str:
    for mine, theirs in (("conv_pre.", "conv_in."), ("ups.", "upsamplers."), ("resblocks.", "resnets."),
                         ("act_post.", "act_out."), ("conv_post.", "conv_out.")):
        key = key.replace(mine, theirs)
    return key


def test_bwe_vocoder_matches_diffusers():
    """LTX-2.3's vocoder (BigVGAN, anti-aliased SnakeBeta, 16 kHz) and bandwidth extender (to 48 kHz) against
    diffusers' LTX2VocoderWithBWE; its anti-aliasing filters are diffusers' own. The output convolutions are
    scaled down so that the waveforms stay inside the final clamp."""
    from _files_ltx2_3 import BWE, VOCODER_23, bwe_vocoder_sd
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    from comfy_kernel_core_nodes.families.ltx2.bigvgan import is_filter_key
    from comfy_kernel_core_nodes.families.ltx2.bwe_vocoder import VocoderWithBWE

    sd = {k: v for k, v in bwe_vocoder_sd(5).items() if not is_filter_key(k)}
    for key in ("vocoder.conv_post.weight", "bwe_generator.conv_post.weight"):
        sd[key] = sd[key] * 0.01
    ours = VocoderWithBWE(ops.plain, VOCODER_23, BWE).eval()
    ours.load_state_dict(sd)
    ref = LTX2VocoderWithBWE(hidden_channels=VOCODER_23.width, final_act_fn="clamp",
                             bwe_hidden_channels=BWE.generator.width).eval()
    ref.load_state_dict({**ref.state_dict(), **{_vocoder_to_diffusers(k): v for k, v in sd.items()}}, strict=True)
    torch.manual_seed(5)
    mel = torch.randn(1, 2, 13, 64)
    with torch.no_grad():
        out = ours(mel)
        close(out, ref(mel))
    assert out.shape == (1, 2, 13 * 160 * 3) and out.abs().max() < 1


def test_ltx23_audio_vae_is_loaded_and_decodes_at_48_khz(monkeypatch):
    """The nested vocoder and its extender are recognised from the keys (filters dropped, nothing missing), the
    strides read from the ``config``; LTXVAudioVAEDecode gives 48 kHz audio, as the network alone does."""
    from _files_ltx2_3 import VOCODER_23, audio_vae_file, audio_vae_sd

    from comfy_kernel_core_nodes.families.ltx2 import nodes as ltx_nodes
    from comfy_kernel_core_nodes.families.ltx2.audio_vae import LTX2AudioVAENet, load_audio_vae
    from comfy_kernel_core_nodes.families.ltx2.bigvgan import is_filter_key
    from comfy_kernel_core_nodes.model.files import tensor_shapes
    from comfy_kernel_core_nodes.nodes import context

    path = str(audio_vae_file())
    vae = load_audio_vae(path)
    assert vae.vocoder_layout == VOCODER_23 and vae.output_sample_rate == 48000
    expected = {k.replace("audio_vae.", "autoencoder.", 1) for k in tensor_shapes(path) if not is_filter_key(k)}
    assert set(vae.get_sd()) == expected
    monkeypatch.setattr(context, "full_path", lambda folder, name: path)
    (vae,) = ltx_nodes.LTXVAudioVAELoader.execute("ltx-2.3-22b-dev-fp8.safetensors").result
    torch.manual_seed(6)
    latent = torch.randn(1, 8, 4, 16)
    (audio,) = ltx_nodes.LTXVAudioVAEDecode.execute({"samples": latent, "type": "audio"}, vae).result
    assert audio["sample_rate"] == 48000 and audio["waveform"].shape == (1, 2, (4 * 4 - 3) * 480)
    net = LTX2AudioVAENet.create(vae.layout, VOCODER_23).eval()
    sd = {k.replace("audio_vae.", "autoencoder.", 1): v.float() for k, v in audio_vae_sd().items()}
    net.load_state_dict({k: v for k, v in sd.items() if not is_filter_key(k)})
    with torch.no_grad():
        close(audio["waveform"], net.decode_raw(latent), rtol=1e-3)


def test_ltx23_checkpoint_is_loaded_and_runs_its_connectors():
    """The 2.3 checkpoint's transformer is detected with every key (its connectors included, split rotary from
    the metadata); conditioning marked ``unprocessed_ltxav_embeds`` goes through the connectors in the model."""
    from _files_ltx2_3 import TRANSFORMER_23, checkpoint_file

    from comfy_kernel_core_nodes.model.files import tensor_shapes
    from comfy_kernel_core_nodes.model.loading import load_diffusion_model

    path = str(checkpoint_file())
    model = load_diffusion_model(path).model
    expected = {k.removeprefix("model.diffusion_model.") for k in tensor_shapes(path)
                if k.startswith("model.diffusion_model.")}
    assert set(model.weights.keys) == expected
    net = model.diffusion_model.float()
    assert net.config == TRANSFORMER_23
    conds = model.extra_conds(cross_attn=torch.zeros(1, 3, 192), unprocessed_ltxav_embeds=True)
    assert conds["unprocessed_ltxav_embeds"].cond is True
    torch.manual_seed(2)
    latent, context = torch.randn(1, 128, 2, 2, 2), torch.randn(1, 5, 192)
    sigma = torch.tensor([0.7])
    with torch.no_grad():
        raw = net(latent, sigma, context, unprocessed_ltxav_embeds=True)
        connected = net.connect(context)
        assert connected.shape == (1, 1024, 192)
        close(raw, net(latent, sigma, connected))
        assert (raw - net(latent, sigma, context)).abs().max() > 1e-3
