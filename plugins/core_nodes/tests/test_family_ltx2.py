"""LTX-2: the video VAE, the audio VAE and its vocoder and the transformer against diffusers; the released key
layouts detected and loaded (VAELoader, LTXVAudioVAELoader, the transformer's detection); the audio nodes.

diffusers is a test-only oracle (the ``test`` extra). Forward passes run small
widths of the released layout in fp32 (to 1e-4 relative); detection and
loading read the random-weight files of _files_ltx2.py.
"""

from __future__ import annotations

import re

import pytest
import torch
from _files_ltx2 import (
    AUDIO_LAYOUT,
    TRANSFORMER_CONFIG,
    VIDEO_VAE_LAYOUT,
    VOCODER_LAYOUT,
    audio_vae_file,
    audio_vae_sd,
    transformer_file,
    video_vae_file,
    video_vae_sd,
)
from _oracle import close, randomize

from comfy_kernel_core_nodes.families.ltx2 import nodes as ltx_nodes
from comfy_kernel_core_nodes.families.ltx2.audio_vae import (
    Autoencoder,
    Vocoder,
    load_audio_vae,
    log_mel,
    mel_filters,
)
from comfy_kernel_core_nodes.families.ltx2.transformer import LTX2Config, LTX2Transformer, pixel_bounds
from comfy_kernel_core_nodes.families.ltx2.vae import LTX2VideoVAENet, layout, released_layout
from comfy_kernel_core_nodes.model import ops
from comfy_kernel_core_nodes.model.detection import unet_config_from
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import UnsupportedModel, load_diffusion_model, load_vae

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

#: ComfyUI's flat stage lists -> diffusers' blocks (residual stages and their resamplers)
ENCODER_BLOCKS = ["down_blocks.0", "down_blocks.0.downsamplers.0", "down_blocks.1", "down_blocks.1.downsamplers.0",
                  "down_blocks.2", "down_blocks.2.downsamplers.0", "down_blocks.3", "down_blocks.3.downsamplers.0",
                  "mid_block"]
DECODER_BLOCKS = ["mid_block", "up_blocks.0.upsamplers.0", "up_blocks.0", "up_blocks.1.upsamplers.0", "up_blocks.1",
                  "up_blocks.2.upsamplers.0", "up_blocks.2"]
STATISTICS = {"per_channel_statistics.mean-of-means": "latents_mean",
              "per_channel_statistics.std-of-means": "latents_std"}


def _video_vae_to_diffusers(key: str) -> str:
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.", lambda m: f"encoder.{ENCODER_BLOCKS[int(m[1])]}.", key)
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.{DECODER_BLOCKS[int(m[1])]}.", key)
    return STATISTICS.get(key, key.replace(".res_blocks.", ".resnets."))


@pytest.fixture(scope="module")
def video_vaes():
    """Ours and diffusers' AutoencoderKLLTX2Video (LTX-2's settings: non-causal decoder) on the same weights;
    diffusers lists decoder depths from the output side."""
    shape = released_layout(encoder_width=16, decoder_width=8, latent=16, encoder_layers=(1, 2, 1, 1, 1),
                            decoder_layers=(1, 2, 1, 1))
    ours = LTX2VideoVAENet(shape).eval()
    sd = randomize(ours)
    ref = diffusers.AutoencoderKLLTX2Video(latent_channels=16, block_out_channels=(32, 64, 128, 256),
                                           decoder_block_out_channels=(16, 32, 64), layers_per_block=(1, 2, 1, 1, 1),
                                           decoder_layers_per_block=(1, 1, 2, 1), decoder_causal=False).eval()
    ref.load_state_dict({_video_vae_to_diffusers(k): v for k, v in sd.items()}, strict=True)
    return ours, ref


def check_video_vae(ours, ref, frames: int, seed: int = 2) -> None:
    """Encode a clip of ``frames`` 64x64 frames and decode a 16-channel latent with both; they must agree."""
    torch.manual_seed(seed)
    clip = torch.rand(1, 3, frames, 64, 64) * 2 - 1
    latent = torch.randn(1, 16, (frames - 1) // 8 + 1, 2, 2)
    with torch.no_grad():
        encoded = ours.encoder(clip)
        close(encoded, ref.encode(clip).latent_dist.mean)
        decoded = ours.decoder(latent)
        close(decoded, ref.decode(latent).sample)
    assert encoded.shape == latent.shape and decoded.shape == clip.shape


@pytest.mark.parametrize("frames", [1, 9])
def test_video_vae_matches_diffusers(video_vaes, frames):
    check_video_vae(*video_vaes, frames)


def test_video_vae_layout_is_read_back_from_the_keys():
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LTX2VideoVAENet(VIDEO_VAE_LAYOUT).state_dict().items()}
    assert layout(shapes, "") == VIDEO_VAE_LAYOUT
    real = released_layout()
    assert [s.width for s in real.encoder if s.kind == "res"] == [128, 256, 512, 1024, 2048]
    assert [s.stride for s in real.encoder if s.kind == "resample"] == [(1, 2, 2), (2, 1, 1), (2, 2, 2), (2, 2, 2)]
    assert [s.width for s in real.decoder if s.kind == "res"] == [1024, 512, 256, 128]


@pytest.mark.parametrize("prefix", ["", "vae."])
def test_video_vae_file_is_detected_without_missing_keys(tmp_path, prefix):
    path = video_vae_file()
    if prefix:  # a checkpoint keeps it under ``vae.``
        from safetensors.torch import save_file

        path = tmp_path / "ltx2_checkpoint_vae.safetensors"
        save_file(video_vae_sd(prefix), str(path))
    vae = load_vae(str(path))
    assert type(vae).__name__ == "LTX2VideoVAE"
    assert (vae.latent_channels, vae.downscale_ratio, vae.temporal_compression_decode(), vae.latent_dim) \
        == (128, 32, 8, 3)
    used = {k[len(prefix):] for k in tensor_shapes(str(path))} - {
        f"per_channel_statistics.{n}" for n in ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")}
    assert set(vae.get_sd()) == used


def test_video_vae_normalises_latents_with_the_file_statistics():
    vae = load_vae(str(video_vae_file()))
    frames = torch.rand(9, 64, 96, 3)
    latent = vae.encode(frames)
    assert latent.shape == (1, 128, 2, 2, 3)
    sd = {k: v.float() for k, v in video_vae_sd().items()}
    net = LTX2VideoVAENet(VIDEO_VAE_LAYOUT).eval()
    net.load_state_dict(sd, strict=False)
    with torch.no_grad():
        raw = net.encoder(frames.movedim(-1, 0).unsqueeze(0) * 2 - 1)
    mean, std = sd["per_channel_statistics.mean-of-means"], sd["per_channel_statistics.std-of-means"]
    close(latent, (raw - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1), rtol=1e-3)
    video = vae.decode(latent)
    assert video.shape == (1, 9, 64, 96, 3) and 0.0 <= float(video.min()) and float(video.max()) <= 1.0
    with pytest.raises(ValueError, match="1 \\+ 8k frames"):
        vae.encode(torch.rand(8, 64, 64, 3))


#: our vocoder names -> diffusers' LTX2Vocoder
VOCODER_NAMES = (("conv_pre.", "conv_in."), ("ups.", "upsamplers."), ("resblocks.", "resnets."),
                 ("conv_post.", "conv_out."))


def test_audio_autoencoder_matches_diffusers():
    """Causal (time-axis) encoder and decoder on stereo 64-bin log-mels; 33 frames <-> 9 latent frames."""
    ours = Autoencoder(ops.plain, AUDIO_LAYOUT).eval()
    sd = randomize(ours)
    ref = diffusers.AutoencoderKLLTX2Audio(base_channels=AUDIO_LAYOUT.ch).eval()
    ref.load_state_dict({k: v for k, v in sd.items() if "per_channel_statistics" not in k}, strict=False)
    torch.manual_seed(4)
    mel, latent = torch.randn(1, 2, 33, 64), torch.randn(1, 8, 9, 16)
    with torch.no_grad():
        encoded = ours.encoder(mel)
        close(encoded, ref.encode(mel).latent_dist.mean)
        decoded = ours.decoder(latent)
        close(decoded, ref.decode(latent).sample)
    assert encoded.shape == latent.shape and decoded.shape == mel.shape


def test_vocoder_matches_diffusers():
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    ours = Vocoder(ops.plain, VOCODER_LAYOUT).eval()
    sd = randomize(ours)
    ref = LTX2Vocoder(hidden_channels=VOCODER_LAYOUT.width).eval()

    def rename(key: str) -> str:
        for mine, theirs in VOCODER_NAMES:
            key = key.replace(mine, theirs)
        return key

    ref.load_state_dict({rename(k): v for k, v in sd.items()}, strict=True)
    torch.manual_seed(5)
    mel = torch.randn(1, 2, 13, 64)
    with torch.no_grad():
        out = ours(mel)
        close(out, ref(mel))
    assert out.shape == (1, 2, 13 * 240)


def test_audio_vae_checkpoint_is_loaded_without_missing_keys():
    vae = load_audio_vae(str(audio_vae_file()))
    assert (vae.layout, vae.vocoder_layout.rates, vae.vocoder_layout.width) == (AUDIO_LAYOUT, (6, 5, 2, 2, 2), 32)
    assert (vae.output_sample_rate, vae.latent_frequency_bins, vae.latent_channels) == (24000, 16, 8)
    assert vae.num_of_latents_from_frames(97, 25) == 97
    expected = {k.replace("audio_vae.", "autoencoder.", 1) for k in tensor_shapes(str(audio_vae_file()))}
    assert set(vae.get_sd()) == expected
    with pytest.raises(UnsupportedModel, match="no LTX-2 audio VAE"):
        load_audio_vae(str(video_vae_file()))


def test_log_mel_matches_transformers_audio_utils():
    """Slaney mel filters and centred-Hann magnitude log-mels, as torchaudio's MelSpectrogram makes them."""
    np = pytest.importorskip("numpy")
    audio_utils = pytest.importorskip("transformers.audio_utils")
    filters = audio_utils.mel_filter_bank(num_frequency_bins=513, num_mel_filters=64, min_frequency=0.0,
                                          max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                                          mel_scale="slaney")
    close(mel_filters(1024, 64, 16000), torch.from_numpy(filters), rtol=1e-6)
    torch.manual_seed(8)
    waveform = torch.randn(1, 2, 16000) * 0.3
    ours = log_mel(waveform, AUDIO_LAYOUT)
    ref = audio_utils.spectrogram(waveform[0, 1].double().numpy(), audio_utils.window_function(1024, "hann"),
                                  frame_length=1024, hop_length=160, power=1.0, center=True, pad_mode="reflect",
                                  mel_filters=filters, mel_floor=1e-5, log_mel="log")
    assert ours.shape == (1, 2, 101, 64)
    close(ours[0, 1], torch.from_numpy(np.ascontiguousarray(ref.T)), rtol=1e-5)


def test_audio_encode_node_crops_resamples_and_normalises():
    """LTXVAudioVAEEncode: 48 kHz mono -> 44.1 kHz (the node), whole 4096-sample blocks, stereo, 16 kHz (the VAE)."""
    from comfy_kernel_core_nodes.media.audio import resample

    vae = load_audio_vae(str(audio_vae_file()))
    torch.manual_seed(9)
    waveform = torch.randn(1, 1, 48000) * 0.2
    (latent,) = ltx_nodes.LTXVAudioVAEEncode.execute({"waveform": waveform, "sample_rate": 48000}, vae).result
    at_44k = resample(waveform, 48000, 44100)
    start = (at_44k.shape[-1] % 4096) // 2
    clip = at_44k[..., start: start + at_44k.shape[-1] // 4096 * 4096].repeat(1, 2, 1)
    mel = log_mel(resample(clip, 44100, 16000), AUDIO_LAYOUT)
    sd = {k[len("audio_vae."):]: v.float() for k, v in audio_vae_sd().items() if k.startswith("audio_vae.")}
    ae = Autoencoder(ops.plain, AUDIO_LAYOUT).eval()
    ae.load_state_dict(sd)
    with torch.no_grad():
        expected = ae.per_channel_statistics.normalize(ae.encoder(mel))
    assert latent["samples"].shape == expected.shape == (1, 8, 24, 16)
    close(latent["samples"], expected, rtol=1e-3)


def test_vae_loader_reads_the_audio_vae_file_too():
    """Current ComfyUI's VAELoader recognises the audio VAE by its vocoder (at the file's top level only)."""
    vae = load_vae(str(audio_vae_file()))
    assert type(vae).__name__ == "LTX2AudioVAE" and vae.latent_dim == 2


def test_empty_audio_latent_lasts_as_long_as_the_video():
    vae = load_audio_vae(str(audio_vae_file()))
    (latent,) = ltx_nodes.LTXVEmptyLatentAudio.execute(121, 24, 2, vae).result
    # 121 frames at 24 fps: 5.04 s of 25 latent frames a second
    assert latent["type"] == "audio" and latent["samples"].shape == (2, 8, 127, 16)
    assert not latent["samples"].any()


def test_audio_nodes_load_and_decode(monkeypatch):
    """The loader resolves the checkpoint name; the decoder un-normalises per (channel, mel bin) and vocodes."""
    from comfy_kernel_core_nodes.nodes import context

    monkeypatch.setattr(context, "full_path", lambda folder, name: str(audio_vae_file()))
    (vae,) = ltx_nodes.LTXVAudioVAELoader.execute("ltx-2-19b-dev.safetensors").result
    torch.manual_seed(6)
    latent = torch.randn(1, 8, 10, 16)
    (audio,) = ltx_nodes.LTXVAudioVAEDecode.execute({"samples": latent, "type": "audio"}, vae).result
    assert audio["sample_rate"] == 24000 and audio["waveform"].shape == (1, 2, (4 * 10 - 3) * 240)

    sd = {k: v.float() for k, v in audio_vae_sd().items()}
    ae, voc = Autoencoder(ops.plain, AUDIO_LAYOUT).eval(), Vocoder(ops.plain, VOCODER_LAYOUT).eval()
    ae.load_state_dict({k[len("audio_vae."):]: v for k, v in sd.items() if k.startswith("audio_vae.")})
    voc.load_state_dict({k[len("vocoder."):]: v for k, v in sd.items() if k.startswith("vocoder.")})
    mean = sd["audio_vae.per_channel_statistics.mean-of-means"].view(8, 1, 16)
    std = sd["audio_vae.per_channel_statistics.std-of-means"].view(8, 1, 16)
    with torch.no_grad():
        expected = voc(ae.decoder(latent * std + mean))
    close(audio["waveform"], expected, rtol=1e-3)


#: ComfyUI's (the released checkpoints') transformer names -> diffusers' LTX2VideoTransformer3DModel, in order
TRANSFORMER_NAMES = (
    ("av_ca_video_scale_shift_adaln_single.", "av_cross_attn_video_scale_shift."),
    ("av_ca_a2v_gate_adaln_single.", "av_cross_attn_video_a2v_gate."),
    ("av_ca_audio_scale_shift_adaln_single.", "av_cross_attn_audio_scale_shift."),
    ("av_ca_v2a_gate_adaln_single.", "av_cross_attn_audio_v2a_gate."),
    ("scale_shift_table_a2v_ca_video", "video_a2v_cross_attn_scale_shift_table"),
    ("scale_shift_table_a2v_ca_audio", "audio_a2v_cross_attn_scale_shift_table"),
    (".q_norm.", ".norm_q."), (".k_norm.", ".norm_k."),
)


def _transformer_to_diffusers(key: str) -> str:
    for mine, theirs in TRANSFORMER_NAMES:
        key = key.replace(mine, theirs)
    for mine, theirs in (("audio_adaln_single.", "audio_time_embed."), ("adaln_single.", "time_embed."),
                         ("audio_patchify_proj.", "audio_proj_in."), ("patchify_proj.", "proj_in.")):
        if key.startswith(mine):
            return theirs + key[len(mine):]
    return key


@pytest.fixture(scope="module")
def transformers_pair():
    config = LTX2Config(in_channels=16, out_channels=16, dim=64, heads=4, audio_in_channels=16,
                        audio_out_channels=16, audio_dim=32, audio_heads=4, caption_channels=24, num_layers=2)
    ours = LTX2Transformer(config).eval()
    sd = randomize(ours)
    ref = diffusers.LTX2VideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=16, cross_attention_dim=64,
        audio_in_channels=16, audio_out_channels=16, audio_num_attention_heads=4, audio_attention_head_dim=8,
        audio_cross_attention_dim=32, num_layers=2, caption_channels=24).eval()
    ref.load_state_dict({_transformer_to_diffusers(k): v for k, v in sd.items()}, strict=True)
    return ours, ref


@pytest.mark.parametrize("per_token", [False, True])
def test_transformer_matches_diffusers(transformers_pair, per_token):
    """Video 2x3x2 latent tokens and 5 audio tokens; per token: the first latent frame's timestep 0 (as image
    conditioning sets it) and the text padding masked out."""
    ours, ref = transformers_pair
    torch.manual_seed(7)
    frames, height, width, audio_frames = 2, 3, 2, 5
    x, a = torch.randn(1, frames * height * width, 16), torch.randn(1, audio_frames, 16)
    context, audio_context = torch.randn(1, 7, 24), torch.randn(1, 7, 24)
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
                                   encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
                                   num_frames=frames, height=height, width=width, fps=24.0,
                                   audio_num_frames=audio_frames, return_dict=False)
    close(video, ref_video)
    close(audio, ref_audio)
    assert video.shape == x.shape and audio.shape == a.shape


def test_reference_audio_runs_ahead_of_the_audio_at_earlier_positions(transformers_pair):
    """LTXVReferenceAudio's tokens: diffusers given the joined audio, timestep 0 for the reference and positions
    that place the 3-token clip so it ends one latent frame (40 ms) before the audio starts gives the same
    velocities for the video and the audio proper."""
    ours, ref = transformers_pair
    torch.manual_seed(8)
    frames, height, width, audio_frames, clip = 2, 3, 2, 5, 3
    x, a, voice = torch.randn(1, 12, 16), torch.randn(1, audio_frames, 16), torch.randn(1, clip, 16)
    context, audio_context = torch.randn(1, 7, 24), torch.randn(1, 7, 24)
    t, audio_t = torch.tensor([600.0]), torch.tensor([400.0])

    def spans(n: int, shift: float = 0.0) -> torch.Tensor:
        """Audio latent i covers mel frames 4i-3 .. 4i+1 (the first only its last one), 10 ms each."""
        i = torch.arange(n, dtype=torch.float32)
        return torch.stack([(4 * i - 3).clip(min=0) * 0.01, (4 * i + 1) * 0.01], dim=-1) - shift

    coords = torch.cat([spans(clip, shift=(4 * (clip - 1) + 1) * 0.01 + 0.04), spans(audio_frames)]).view(1, 1, -1, 2)
    with torch.no_grad():
        video, audio = ours.forward_tokens(x, a, context, audio_context, t, audio_t, (frames, height, width), 24.0,
                                           audio_reference=voice)
        ref_video, ref_audio = ref(hidden_states=x, audio_hidden_states=torch.cat([voice, a], dim=1),
                                   encoder_hidden_states=context, audio_encoder_hidden_states=audio_context,
                                   timestep=t, audio_timestep=torch.cat([torch.zeros(1, clip),
                                                                         audio_t.expand(1, audio_frames)], dim=1),
                                   num_frames=frames, height=height, width=width, fps=24.0,
                                   audio_num_frames=clip + audio_frames, audio_coords=coords, return_dict=False)
        plain = ours.forward_tokens(x, a, context, audio_context, t, audio_t, (frames, height, width), 24.0)
    assert audio.shape == a.shape
    close(video, ref_video)
    close(audio, ref_audio[:, clip:])
    assert not torch.allclose(plain[1], audio, atol=1e-3)


def _guided_inputs(text_widths: tuple[int, int] = (24, 24), guide_at: int = 8, seed: int = 9):
    """Video of 3 latent frames of 2x2 tokens whose last frame is a guide placed at pixel frame ``guide_at``, 5
    audio tokens, text states of the two widths, per-token timesteps (the guide at 0); the tokens' spans for
    diffusers (time in seconds at 24 fps)."""
    torch.manual_seed(seed)
    x, a = torch.randn(1, 12, 16), torch.randn(1, 5, 16)
    context, audio_context = torch.randn(1, 7, text_widths[0]), torch.randn(1, 7, text_widths[1])
    t = torch.full((1, 12), 600.0)
    t[:, 8:] = 0.0
    keyframes = pixel_bounds((1, 2, 2), (8, 32, 32))
    keyframes[:, 0] += guide_at
    coords = pixel_bounds((3, 2, 2), (8, 32, 32))
    coords[:, :, 8:] = keyframes
    coords[:, 0] /= 24.0
    return x, a, context, audio_context, t, keyframes, coords


def test_guide_tokens_left_out_of_the_sequence(transformers_pair):
    """Tokens an IC-LoRA guide's noise mask drops: diffusers given only the kept tokens at their positions gives
    the same velocities for them; the dropped ones get zero."""
    ours, ref = transformers_pair
    x, a, context, audio_context, t, keyframes, coords = _guided_inputs()
    kept = torch.ones(12, dtype=torch.bool)
    kept[9] = kept[11] = False
    audio_t = torch.tensor([400.0])
    with torch.no_grad():
        video, audio = ours.forward_tokens(x, a, context, audio_context, t, audio_t, (3, 2, 2), 24.0,
                                           keyframe_idxs=keyframes, kept=kept,
                                           guide_entries=[{"pre_filter_count": 4, "strength": 1.0,
                                                           "pixel_mask": None, "latent_shape": [1, 1, 2]}])
        ref_video, ref_audio = ref(hidden_states=x[:, kept], audio_hidden_states=a, encoder_hidden_states=context,
                                   audio_encoder_hidden_states=audio_context, timestep=t[:, kept],
                                   audio_timestep=audio_t, audio_num_frames=5, fps=24.0,
                                   video_coords=coords[:, :, kept], return_dict=False)
    assert video.shape == x.shape
    close(video[:, kept], ref_video)
    assert not video[:, ~kept].any()
    close(audio, ref_audio)


def test_guide_attention_mask_blocks_video_and_guide_where_it_is_zero(transformers_pair):
    """LTXVAddGuide's attention mask, zero on the guide's left column: its tokens and the video do not attend to
    each other (diffusers with the same multiplicative self-attention mask); at strength 1 elsewhere nothing
    changes."""
    ours, ref = transformers_pair
    x, a, context, audio_context, t, keyframes, coords = _guided_inputs()
    pixel_mask = torch.ones(1, 1, 1, 64, 64)
    pixel_mask[..., :32] = 0.0
    entry = {"pre_filter_count": 4, "strength": 1.0, "pixel_mask": pixel_mask, "latent_shape": [1, 2, 2]}
    blocked = torch.tensor([True, False, True, False])  # guide tokens in row-major order: left column blocked
    allowed = torch.ones(1, 12, 12)
    allowed[:, :8, 8:][:, :, blocked] = 0.0
    allowed[:, 8:, :8][:, blocked] = 0.0
    audio_t = torch.tensor([400.0])
    with torch.no_grad():
        video, audio = ours.forward_tokens(x, a, context, audio_context, t, audio_t, (3, 2, 2), 24.0,
                                           keyframe_idxs=keyframes, guide_entries=[entry])
        ref_video, ref_audio = ref(hidden_states=x, audio_hidden_states=a, encoder_hidden_states=context,
                                   audio_encoder_hidden_states=audio_context, timestep=t, audio_timestep=audio_t,
                                   audio_num_frames=5, fps=24.0, video_coords=coords,
                                   video_self_attention_mask=allowed, return_dict=False)
        open_video, _ = ours.forward_tokens(x, a, context, audio_context, t, audio_t, (3, 2, 2), 24.0,
                                            keyframe_idxs=keyframes, guide_entries=[{**entry, "pixel_mask": None}])
    close(video, ref_video)
    close(audio, ref_audio)
    assert not torch.allclose(video, open_video, atol=1e-4)


def test_guide_strength_weighs_attention_by_its_logarithm():
    """A strength-0.5 guide: video queries on guide keys and guide queries on video keys get log(0.5) added to
    their scores, guide to guide nothing; the grouped attention equals the dense masked one."""
    from comfy_kernel_core_nodes.families.ltx2.guides import guide_bias
    from comfy_kernel_core_nodes.model.attention import optimized_attention

    bias = guide_bias([{"pre_filter_count": 3, "strength": 0.5, "pixel_mask": None, "latent_shape": [1, 1, 3]}],
                      torch.ones(3, dtype=torch.bool), 7, torch.float32, torch.device("cpu"))
    assert (bias.start, bias.count) == (4, 3)
    dense = torch.zeros(7, 7)
    dense[:4, 4:] = dense[4:, :4] = torch.log(torch.tensor(0.5))
    torch.manual_seed(10)
    q, k, v = (torch.randn(2, 7, 8) for _ in range(3))
    close(bias.attend(optimized_attention, q, k, v, 2), optimized_attention(q, k, v, 2, mask=dense[None, None]))
    assert guide_bias([{"pre_filter_count": 3, "strength": 1.0, "pixel_mask": None, "latent_shape": [1, 1, 3]}],
                      torch.ones(3, dtype=torch.bool), 7, torch.float32, torch.device("cpu")) is None


def test_transformer_file_is_detected_with_every_key():
    path = str(transformer_file())
    shapes = tensor_shapes(path)
    architecture, config = unet_config_from(shapes, "model.diffusion_model.")
    assert architecture == "ltxav"
    assert {k: config[k] for k in ("in_channels", "out_channels", "num_attention_heads", "attention_head_dim",
                                   "audio_in_channels", "audio_attention_head_dim", "caption_channels",
                                   "num_layers", "gated_attention")} == {
        "in_channels": 128, "out_channels": 128, "num_attention_heads": 32, "attention_head_dim": 4,
        "audio_in_channels": 128, "audio_attention_head_dim": 2, "caption_channels": 3840, "num_layers": 2,
        "gated_attention": False}
    assert LTX2Config.from_unet_config(config) == TRANSFORMER_CONFIG
    with torch.device("meta"):
        expected = {"model.diffusion_model." + k for k in LTX2Transformer(TRANSFORMER_CONFIG).state_dict()}
    assert set(shapes) == expected
    model = load_diffusion_model(path).model
    assert model.model_config.unet_config["num_layers"] == 2
    assert set(model.weights.keys) == {k.removeprefix("model.diffusion_model.") for k in expected}


def test_empty_video_latent_and_frame_rate_conditioning():
    (latent,) = ltx_nodes.EmptyLTXVLatentVideo.execute(768, 512, 97, 2).result
    assert latent["samples"].shape == (2, 128, 13, 16, 24) and not latent["samples"].any()
    positive = [[torch.zeros(1, 3, 8), {"pooled_output": None}]]
    negative = [[torch.ones(1, 3, 8), {}]]
    pos, neg = ltx_nodes.LTXVConditioning.execute(positive, negative, 24.0).result
    assert pos[0][1] == {"pooled_output": None, "frame_rate": 24.0} and neg[0][1] == {"frame_rate": 24.0}
    assert "frame_rate" not in positive[0][1]  # the inputs are not changed
