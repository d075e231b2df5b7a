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
from test_family_ltx2 import _guided_inputs, _transformer_to_diffusers

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


#: LTX-2.5's differences: no timestep embedding for the text modulation, no biases in the video feed-forward,
#: the keyframe marker
CONFIG_25 = replace(CONFIG_23, prompt_adaln=False, ff_bias=False, keyframe_embedding=True)


@pytest.mark.parametrize(("version", "per_token"), [("2.3", False), ("2.3", True), ("2.5", True)])
def test_ltx23_transformer_matches_diffusers(version, per_token):
    """diffusers configured as LTX-2.3 (gates, cross-attention modulation, no caption projection, split rotary)
    and run as its 2.3 pipelines run it (each stream's sigma for the text modulation, the other stream's for the
    cross-modal one); per token: the first latent frame kept (timestep 0) and the text padding masked out.
    LTX-2.5's static text modulation, bias-free video feed-forward and keyframe marker too (diffusers told which
    tokens hold a single pixel frame: the first latent frame's)."""
    if version == "2.3":
        ours, ref = _pair(CONFIG_23)
    else:
        ours, ref = _pair(CONFIG_25, use_prompt_adaln_single=False, ff_bias=False,
                          use_keyframes_abs_pos_embedding=True)
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
    first_frame = torch.zeros(1, frames * height * width, 1)
    first_frame[:, : height * width] = 1.0
    with torch.no_grad():
        video, audio = ours.forward_tokens(x, a, context, audio_context, t, audio_t, (frames, height, width), 24.0,
                                           context_mask=mask, audio_context_mask=mask)
        ref_video, ref_audio = ref(hidden_states=x, audio_hidden_states=a, encoder_hidden_states=context,
                                   audio_encoder_hidden_states=audio_context, timestep=t, audio_timestep=audio_t,
                                   sigma=t.amax(dim=-1), audio_sigma=audio_t.amax(dim=-1),
                                   encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
                                   num_frames=frames, height=height, width=width, fps=24.0,
                                   audio_num_frames=audio_frames, use_cross_timestep=True,
                                   video_keyframes_mask=first_frame, return_dict=False)
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


def test_ltx25_keyframe_marker_skips_guide_frames():
    """A guide appended at pixel frame 0 starts at frame 0 too, yet gets no keyframe marker: only the video's own
    first latent frame does (diffusers told so, given the guide's positions)."""
    ours, ref = _pair(CONFIG_25, use_prompt_adaln_single=False, ff_bias=False, use_keyframes_abs_pos_embedding=True)
    x, a, context, audio_context, t, guide, coords = _guided_inputs((64, 32), guide_at=0, seed=8)
    marked = torch.zeros(1, 12, 1)
    marked[:, :4] = 1.0
    audio_t = torch.tensor([400.0])
    with torch.no_grad():
        video, _ = ours.forward_tokens(x, a, context, audio_context, t, audio_t, (3, 2, 2), 24.0,
                                       keyframe_idxs=guide)
        ref_video, _ = ref(hidden_states=x, audio_hidden_states=a, encoder_hidden_states=context,
                           audio_encoder_hidden_states=audio_context, timestep=t, audio_timestep=audio_t,
                           sigma=t.amax(dim=-1), audio_sigma=audio_t.amax(dim=-1), audio_num_frames=5, fps=24.0,
                           video_coords=coords, use_cross_timestep=True, video_keyframes_mask=marked,
                           return_dict=False)
    close(video, ref_video)


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


#: LTX-2.3's video VAE section of the ``config`` metadata, as ComfyUI reads it (stages in the encoder's order,
#: the decoder running them backwards): upsamplers without shortcuts, zero padding
VAE_CONFIG_23 = {"decoder_spatial_padding_mode": "zeros", "decoder_blocks": [
    ["res_x", {"num_layers": 1}], ["compress_space", {"multiplier": 2, "residual": False}],
    ["res_x", {"num_layers": 1}], ["compress_time", {"multiplier": 2, "residual": False}],
    ["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 1, "residual": False}],
    ["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 2, "residual": False}],
    ["res_x", {"num_layers": 1}]]}



def _from_diffusers(key: str) -> str:
    """diffusers' video VAE name -> ours (the inverse of test_family_ltx2's mapping, with a fourth up block)."""
    from test_family_ltx2 import DECODER_BLOCKS, ENCODER_BLOCKS, STATISTICS

    inverse = {v: k for k, v in STATISTICS.items()}
    if key in inverse:
        return inverse[key]
    key = key.replace(".resnets.", ".res_blocks.")
    for side, flat, blocks in (("encoder", "down_blocks", ENCODER_BLOCKS),
                               ("decoder", "up_blocks", [*DECODER_BLOCKS, "up_blocks.3.upsamplers.0", "up_blocks.3"])):
        for i, block in sorted(enumerate(blocks), key=lambda b: -len(b[1])):  # longest names first
            stem = f"{side}.{block}."
            if key.startswith(stem):
                return f"{side}.{flat}.{i}." + key[len(stem):]
    return key


@pytest.fixture(scope="module")
def video_vaes_23():
    """diffusers' AutoencoderKLLTX2Video configured as LTX-2.3 (a last encoder stage as wide as the one before;
    decoder upsamplers spatio-temporal x2, spatio-temporal, temporal, spatial, without shortcuts; zero padding)
    at small widths, and ours built from its tensors' shapes and the ``config`` metadata."""
    from comfy_kernel_core_nodes.families.ltx2.vae import LTX2VideoVAENet, layout, with_config

    ref = diffusers.AutoencoderKLLTX2Video(
        latent_channels=16, block_out_channels=(32, 64, 128, 128), decoder_block_out_channels=(16, 32, 32, 64),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 2, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True, True), decoder_inject_noise=(False,) * 5,
        upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
        upsample_residual=(False,) * 4, upsample_factor=(2, 2, 1, 2), decoder_causal=False,
        decoder_spatial_padding_mode="zeros").eval()
    names = {_from_diffusers(k): k for k in ref.state_dict()}
    shapes = {ours: tuple(ref.state_dict()[theirs].shape) for ours, theirs in names.items()}
    shape = with_config(layout(shapes, ""), VAE_CONFIG_23)
    ours = LTX2VideoVAENet(shape).eval()
    sd = randomize(ours)
    assert set(sd) == set(names)
    ref.load_state_dict({names[k]: v for k, v in sd.items()}, strict=True)
    return ours, ref, shape


def test_ltx23_video_vae_layout_comes_from_shapes_and_metadata(video_vaes_23):
    *_, shape = video_vaes_23
    resamplers = [s for s in shape.decoder if s.kind == "resample"]
    assert [s.stride for s in resamplers] == [(2, 2, 2), (2, 2, 2), (2, 1, 1), (1, 2, 2)]
    assert not any(s.residual for s in resamplers) and shape.decoder_padding == "zeros"
    from comfy_kernel_core_nodes.families.ltx2.vae import with_config

    assert with_config(shape, None) == shape  # no metadata: the file is read as it is
    ltx2 = with_config(shape, {"decoder_blocks": [["compress_all", {"residual": True}]] * 4,
                               "spatial_padding_mode": "reflect"})
    assert all(s.residual for s in ltx2.decoder if s.kind == "resample") and ltx2.decoder_padding == "reflect"


@pytest.mark.parametrize("frames", [1, 9])
def test_ltx23_video_vae_matches_diffusers(video_vaes_23, frames):
    from test_family_ltx2 import check_video_vae

    ours, ref, _ = video_vaes_23
    check_video_vae(ours, ref, frames, seed=3)


def test_ltx23_checkpoint_video_vae_is_built_from_its_metadata():
    """The checkpoint's ``vae.`` tensors alone cannot tell LTX-2.3's decoder from LTX-2's: the ``config``
    metadata's ``vae`` section does (no shortcuts, zero padding)."""
    from _files_ltx2_3 import VIDEO_VAE_LAYOUT_23, checkpoint_file

    from comfy_kernel_core_nodes.model.loading import load_checkpoint

    _, _, vae = load_checkpoint(str(checkpoint_file()), output_clip=False)
    with vae.patcher.use() as model:
        net = model.loaded_module
    upsamplers = [m for m in net.decoder.up_blocks if hasattr(m, "residual")]
    assert len(upsamplers) == 4 and not any(m.residual for m in upsamplers)
    assert net.decoder.conv_in.spatial_mode == "zeros"
    assert [m.stride for m in upsamplers] == [s.stride for s in VIDEO_VAE_LAYOUT_23.decoder if s.kind == "resample"]


def test_ltx23_video_vae_file_without_metadata_is_recognised_by_its_upsamplers(tmp_path):
    """A bare LTX-2.3 VAE file that lost its metadata: the temporal-only upsampler gives it away."""
    from _files_ltx2 import VIDEO_VAE_LAYOUT, video_vae_sd
    from _files_ltx2_3 import VIDEO_VAE_LAYOUT_23
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.families.ltx2.vae import guessed_config, with_config
    from comfy_kernel_core_nodes.model.loading import load_vae

    assert guessed_config(VIDEO_VAE_LAYOUT) is None
    assert with_config(VIDEO_VAE_LAYOUT_23, guessed_config(VIDEO_VAE_LAYOUT_23)) == VIDEO_VAE_LAYOUT_23
    path = tmp_path / "ltx23_video_vae.safetensors"
    save_file(video_vae_sd(shape=VIDEO_VAE_LAYOUT_23), str(path))
    with load_vae(str(path)).patcher.use() as model:
        decoder = model.loaded_module.decoder
    assert decoder.conv_out.spatial_mode == "zeros"
    assert not any(getattr(m, "residual", False) for m in decoder.up_blocks)
