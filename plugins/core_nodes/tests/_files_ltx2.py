"""Random-weight files of LTX-2 in ComfyUI's released key layouts (see _random_weights).

The video VAE keeps the released stage list and depths (residual stages of
4, 6, 6, 2, 2 blocks between four downsamplers; 5 blocks between three
upsamplers) and 128 latent channels, at widths 8-128 (detection reads every
width from the keys). Besides the two statistics the VAE uses, the file
carries the three others the released files have. The audio VAE file holds
the audio autoencoder (``audio_vae.``) and the vocoder (``vocoder.``) at
reduced widths, with the ``config`` metadata the released checkpoints carry.
The transformer keeps the released key layout and input widths at 128 / 64
wide streams and two blocks (its text connectors are not written).
Files are written once into the repository's ``.cache`` and reused; the version in each name changes
when a recipe does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _random_weights import cached_file, module_shapes, random_state_dict

from comfy_kernel_core_nodes.families.ltx2.audio_vae import AudioLayout, Autoencoder, Vocoder, VocoderLayout
from comfy_kernel_core_nodes.families.ltx2.transformer import LTX2Config, LTX2Transformer
from comfy_kernel_core_nodes.families.ltx2.vae import (
    UNUSED_STATISTICS,
    Layout,
    LTX2VideoVAENet,
    released_layout,
)
from comfy_kernel_core_nodes.model import ops

VERSION = "v1"
#: the small video VAE: encoder from 8 channels, decoder down to 8, the real latent width
VIDEO_VAE_LAYOUT = released_layout(encoder_width=8, decoder_width=8, latent=128)


def _shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return module_shapes(build())


def video_vae_sd(prefix: str = "", seed: int = 11, shape: Layout = VIDEO_VAE_LAYOUT) -> dict[str, torch.Tensor]:
    sd = random_state_dict(_shapes(lambda: LTX2VideoVAENet(shape)), seed, torch.float16)
    generator = torch.Generator().manual_seed(seed)
    latent = shape.latent
    stats = {"mean-of-means": 0.1 * torch.randn(latent, generator=generator),
             "std-of-means": 0.5 + torch.rand(latent, generator=generator)}
    stats.update({name: torch.rand(latent, generator=generator) for name in UNUSED_STATISTICS})
    sd.update({f"per_channel_statistics.{name}": t.to(torch.float16) for name, t in stats.items()})
    return {prefix + k: v for k, v in sd.items()}


def video_vae_file() -> Path:
    """The video VAE alone (VAELoader's file, keys at the top level)."""
    return cached_file(f"{VERSION}-ltx2_video_vae_small.safetensors", video_vae_sd)


#: the audio autoencoder at 16-64 channels (released: 128-512) and a 32-wide vocoder (released: 1024), with the
#: released spectrogram settings and vocoder strides
AUDIO_LAYOUT = AudioLayout(ch=16)
VOCODER_LAYOUT = VocoderLayout(width=32)
#: the ``config`` metadata ComfyUI reads the audio VAE's settings from (the released files' sections)
AUDIO_CONFIG = {
    "audio_vae": {"model": {"params": {"sampling_rate": 16000, "ddconfig": {
        "double_z": True, "mel_bins": 64, "z_channels": 8, "in_channels": 2, "out_ch": 2, "ch": AUDIO_LAYOUT.ch,
        "ch_mult": list(AUDIO_LAYOUT.ch_mult), "num_res_blocks": 2, "attn_resolutions": [],
        "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height"}}},
        "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160}}},
    "vocoder": {"resblock_kernel_sizes": [3, 7, 11], "upsample_rates": [6, 5, 2, 2, 2],
                "upsample_kernel_sizes": [16, 15, 8, 4, 4], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
                "upsample_initial_channel": VOCODER_LAYOUT.width, "stereo": True, "resblock": "1"},
}


def audio_vae_sd(seed: int = 12) -> dict[str, torch.Tensor]:
    """The audio autoencoder under ``audio_vae.`` and the vocoder under ``vocoder.``, as checkpoints keep them."""
    ae = random_state_dict(_shapes(lambda: Autoencoder(ops.plain, AUDIO_LAYOUT)), seed, torch.float16)
    generator = torch.Generator().manual_seed(seed)
    size = ae["per_channel_statistics.mean-of-means"].shape[0]
    ae["per_channel_statistics.mean-of-means"] = (0.1 * torch.randn(size, generator=generator)).half()
    ae["per_channel_statistics.std-of-means"] = (0.5 + torch.rand(size, generator=generator)).half()
    voc = random_state_dict(_shapes(lambda: Vocoder(ops.plain, VOCODER_LAYOUT)), seed + 1, torch.float16)
    return {**{"audio_vae." + k: v for k, v in ae.items()}, **{"vocoder." + k: v for k, v in voc.items()}}


def audio_vae_file() -> Path:
    """A checkpoint holding only the audio VAE and vocoder, with the ``config`` metadata (LTXVAudioVAELoader's)."""
    return cached_file(f"{VERSION}-ltx2_audio_vae_small.safetensors", audio_vae_sd,
                       metadata={"config": json.dumps(AUDIO_CONFIG)})


#: the transformer at 128 (video) / 64 (audio) wide with 32 heads each (ComfyUI's reading), two blocks; the real
#: latent widths (128 video channels, 8 x 16 audio) and Gemma's 3840-wide text states
TRANSFORMER_CONFIG = LTX2Config(dim=128, heads=32, audio_dim=64, audio_heads=32, num_layers=2)


def transformer_file(seed: int = 13) -> Path:
    """The transformer under ``model.diffusion_model.``, as the released checkpoints keep it."""
    def make() -> dict[str, torch.Tensor]:
        sd = random_state_dict(_shapes(lambda: LTX2Transformer(TRANSFORMER_CONFIG)), seed, torch.bfloat16)
        return {"model.diffusion_model." + k: v for k, v in sd.items()}

    return cached_file(f"{VERSION}-ltx2_transformer_small.safetensors", make)


def checkpoint_file() -> Path:
    """A whole LTX-2 checkpoint without its text encoder: the transformer (``model.diffusion_model.``), the video
    VAE (``vae.``), the audio VAE and vocoder, with the ``config`` metadata (CheckpointLoaderSimple's and
    LTXVAudioVAELoader's file)."""
    def make() -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return {**load_file(transformer_file()), **video_vae_sd("vae."), **audio_vae_sd()}

    return cached_file(f"{VERSION}-ltx2_checkpoint_small.safetensors", make,
                       metadata={"config": json.dumps(AUDIO_CONFIG)})


def conditioning_file(seed: int, tokens: int = 6) -> Path:
    """A random prompt as the text encoder hands it to the transformer: video and audio states side by side
    [1, tokens, 2 x 3840], in Load Conditioning's layout."""
    def make() -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return {"conditioning": torch.randn(1, tokens, 2 * TRANSFORMER_CONFIG.caption_channels,
                                            generator=generator)}

    return cached_file(f"{VERSION}-ltx2_conditioning_{seed}_{tokens}.safetensors", make)


#: the x2 spatial upsampler of LTX-2 at 32 middle channels (released: 1024), one block a stage (released: 4)
UPSAMPLER_CONFIG = {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 32,
                    "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True, "temporal_upsample": False,
                    "spatial_scale": 2.0, "rational_resampler": True}


def upsampler_file(seed: int = 14) -> Path:
    """An LTX-2 latent upsampler (LatentUpscaleModelLoader's file): the rational resampler's convolution and its
    blur kernel, with the ``config`` metadata."""
    from comfy_kernel_core_nodes.families.ltx2.upsampler import LTXLatentUpsamplerNet, UpsamplerLayout

    layout = UpsamplerLayout(mid_channels=32, blocks=1, rational=True)

    def make() -> dict[str, torch.Tensor]:
        sd = random_state_dict(_shapes(lambda: LTXLatentUpsamplerNet(layout, ops.plain)), seed, torch.bfloat16)
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        sd["upsampler.blur_down.kernel"] = (torch.outer(k, k) / 256.0)[None, None]
        return sd

    return cached_file(f"{VERSION}-ltx2_upsampler_small.safetensors", make,
                       metadata={"config": json.dumps(UPSAMPLER_CONFIG)})
