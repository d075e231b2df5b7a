"""Random-weight files of LTX-2.3 in ComfyUI's released key layouts (see _random_weights).

The audio VAE file keeps LTX-2's autoencoder (``audio_vae.``) and LTX-2.3's
vocoder with bandwidth extension (``vocoder.vocoder.``,
``vocoder.bwe_generator.``, ``vocoder.mel_stft.``) at reduced widths (128
and 64; released: 1536 and 512) with the released strides and the ``config``
metadata. The STFT bases are a Hann-windowed DFT and the mel filters Slaney's
(the files carry both); the anti-aliasing filters are written as the files
have them. The checkpoint joins LTX-2.3's transformer (gates, text
modulation, its own gated connectors), text projection and audio side with
LTX-2.3's video VAE (at 8-64 channels; its decoder told apart by the
``config`` metadata's ``vae`` section); a LoRA for the small Gemma of
_files_ltx2_text goes with it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from _files_ltx2 import AUDIO_CONFIG, AUDIO_LAYOUT, _shapes, video_vae_sd
from _files_ltx2_text import GEMMA, STATES
from _random_weights import cached_file, random_state_dict

from comfy_kernel_core_nodes.families.ltx2.audio_vae import Autoencoder, VocoderLayout, mel_filters
from comfy_kernel_core_nodes.families.ltx2.bigvgan import kaiser_sinc
from comfy_kernel_core_nodes.families.ltx2.bwe_vocoder import BWELayout, VocoderWithBWE
from comfy_kernel_core_nodes.families.ltx2.text_head import TextHead
from comfy_kernel_core_nodes.families.ltx2.transformer import LTX2Config, LTX2Transformer
from comfy_kernel_core_nodes.families.ltx2.vae import config_23_decoder_blocks, released_layout_23
from comfy_kernel_core_nodes.model import ops

VERSION = "v2"
BWE = BWELayout(generator=VocoderLayout(width=64, rates=(6, 5, 2, 2, 2), kernels=(12, 11, 4, 4, 4), resblock="AMP1",
                                        final_bias=False, final_activation=False))
VOCODER_23 = VocoderLayout(width=128, rates=(5, 2, 2, 2, 2, 2), kernels=(11, 4, 4, 4, 4, 4), resblock="AMP1",
                           final_bias=False, final_tanh=False, bwe=BWE, output_sample_rate=48000)
_AMP = {"resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3, "stereo": True,
        "resblock": "AMP1", "activation": "snakebeta", "use_bias_at_final": False}
#: the ``config`` metadata: LTX-2's audio VAE section, LTX-2.3's nested vocoder section
AUDIO_CONFIG_23 = {
    "audio_vae": AUDIO_CONFIG["audio_vae"],
    "vocoder": {
        "vocoder": {**_AMP, "upsample_rates": [5, 2, 2, 2, 2, 2], "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
                    "upsample_initial_channel": VOCODER_23.width, "use_tanh_at_final": False},
        "bwe": {**_AMP, "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
                "upsample_initial_channel": BWE.generator.width, "input_sampling_rate": 16000,
                "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512, "num_mels": 64}},
}


def stft_bases(n_fft: int = 512) -> torch.Tensor:
    """Real then imaginary rows of the DFT times a Hann window [n_fft + 2, 1, n_fft]."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * math.pi * k * n / n_fft
    return torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window]).float()[:, None]


def bwe_vocoder_sd(seed: int) -> dict[str, torch.Tensor]:
    """The vocoder with its bandwidth extender, keys as under ``vocoder.`` (without it)."""
    sd = random_state_dict(_shapes(lambda: VocoderWithBWE(ops.plain, VOCODER_23, BWE)), seed, torch.float32)
    sd["mel_stft.stft_fn.forward_basis"] = sd["mel_stft.stft_fn.inverse_basis"] = stft_bases()
    sd["mel_stft.mel_basis"] = mel_filters(512, 64, 16000).T.contiguous()
    up, down = kaiser_sinc(0.25, 0.3, 12).view(1, 1, -1), kaiser_sinc(0.25, 0.3, 12).view(1, 1, -1)
    for key in [k for k in sd if k.endswith(".act.alpha")]:
        stem = key[: -len("act.alpha")]
        sd[stem + "upsample.filter"], sd[stem + "downsample.lowpass.filter"] = up, down
    return sd


def audio_vae_sd(seed: int = 42) -> dict[str, torch.Tensor]:
    ae = random_state_dict(_shapes(lambda: Autoencoder(ops.plain, AUDIO_LAYOUT)), seed, torch.float16)
    generator = torch.Generator().manual_seed(seed)
    size = ae["per_channel_statistics.mean-of-means"].shape[0]
    ae["per_channel_statistics.mean-of-means"] = (0.1 * torch.randn(size, generator=generator)).half()
    ae["per_channel_statistics.std-of-means"] = (0.5 + torch.rand(size, generator=generator)).half()
    voc = {k: v.bfloat16() for k, v in bwe_vocoder_sd(seed + 1).items()}
    return {**{"audio_vae." + k: v for k, v in ae.items()}, **{"vocoder." + k: v for k, v in voc.items()}}


def audio_vae_file() -> Path:
    """LTX-2.3's audio VAE and vocoder alone, with the ``config`` metadata."""
    return cached_file(f"{VERSION}-ltx23_audio_vae_small.safetensors", audio_vae_sd,
                       metadata={"config": json.dumps(AUDIO_CONFIG_23)})


#: LTX-2.3's transformer at 128 / 64 wide streams of 32 heads (ComfyUI's reading), two blocks, gated attention,
#: text modulation and two-block gated connectors (4 heads each; released: 8 blocks of 32 heads) in the
#: diffusion model, reading the text projection's 128 / 64 wide features
TRANSFORMER_23 = LTX2Config(dim=128, heads=32, audio_dim=64, audio_heads=32, caption_channels=0, num_layers=2,
                            gated_attention=True, prompt_modulation=True, prompt_adaln=True, caption_projection=False,
                            cross_timestep=True, rope_split=True, connector_layers=2, connector_registers=128,
                            connector_heads=4, audio_connector_heads=4, connector_gated=True)
#: the text projection of _files_ltx2_text's Gemma (8 states of 256) onto the two streams' widths
HEAD_23 = {"projection": "dual_linear", "in_features": STATES * GEMMA.hidden_size, "video_width": 128,
           "audio_width": 64}
#: the released files' transformer section of the ``config`` metadata (the part read here)
TRANSFORMER_METADATA = {"rope_type": "split", "frequencies_precision": "float64", "apply_gated_attention": True,
                        "cross_attention_adaln": True, "caption_proj_before_connector": True}


#: LTX-2.3's video VAE at 8-64 channels (released: 128-1024) and its section of the ``config`` metadata
VIDEO_VAE_LAYOUT_23 = released_layout_23(width=8)
VAE_METADATA = {"decoder_spatial_padding_mode": "zeros", "decoder_blocks": config_23_decoder_blocks(VIDEO_VAE_LAYOUT_23)}


def checkpoint_sd(seed: int) -> dict[str, torch.Tensor]:
    sd = random_state_dict(_shapes(lambda: LTX2Transformer(TRANSFORMER_23)), seed, torch.bfloat16)
    for key in [k for k in sd if k.endswith("learnable_registers")]:
        sd[key] = (torch.rand(sd[key].shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1).bfloat16()
    head = random_state_dict(_shapes(lambda: TextHead(ops.plain, HEAD_23)), seed + 1, torch.bfloat16)
    return {**{"model.diffusion_model." + k: v for k, v in sd.items()}, **head, **video_vae_sd("vae.", shape=VIDEO_VAE_LAYOUT_23),
            **audio_vae_sd(seed + 2)}


def checkpoint_file(seed: int = 51) -> Path:
    """A whole LTX-2.3 checkpoint: the transformer with its connectors, the text projection, the video VAE (2.3's
    decoder), the audio VAE and the vocoder with bandwidth extension, with the ``config`` metadata."""
    config = {"transformer": TRANSFORMER_METADATA, "vae": VAE_METADATA, **AUDIO_CONFIG_23}
    return cached_file(f"{VERSION}-ltx23_checkpoint_small_{seed}.safetensors", lambda: checkpoint_sd(seed),
                       metadata={"config": json.dumps(config)})


def gemma_lora_file(seed: int = 52, rank: int = 4) -> Path:
    """A LoRA on the small Gemma's first attention projections, under ComfyUI's text encoder names."""
    def make() -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        sd = {}
        for name, (cout, cin) in (("q_proj", (128, 256)), ("v_proj", (64, 256))):
            key = f"text_encoders.gemma3_12b.transformer.model.layers.0.self_attn.{name}"
            sd[key + ".lora_A.weight"] = (0.1 * torch.randn(rank, cin, generator=generator)).bfloat16()
            sd[key + ".lora_B.weight"] = (0.1 * torch.randn(cout, rank, generator=generator)).bfloat16()
        return sd

    return cached_file(f"{VERSION}-ltx23_gemma_lora_small_{seed}.safetensors", make)
