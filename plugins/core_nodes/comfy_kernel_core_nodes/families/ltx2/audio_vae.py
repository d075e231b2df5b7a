"""The LTX-2 audio VAE and its vocoder: log-mel spectrograms <-> 8 x 16 latents at 25 frames a second.

The autoencoder works on stereo log-mel spectrograms [B, 2, T, 64] (16 kHz,
hop 160: 100 frames a second) with 2-d convolutions that are causal along
time (all padding in front), parameter-free RMS norms and two 2x
downsamplers, so latents are [B, 8, 1 + (T - 1) / 4, 16]. Latents are
normalised per (channel, mel bin) pair with the file's 128 statistics. The
vocoder (HiFi-GAN: transposed-convolution upsamplers, each followed by the
mean of three dilated residual stacks) turns the decoded spectrogram into a
24 kHz stereo waveform.

Module names are ComfyUI's (``autoencoder.encoder.down.N.block.M.conv1.conv``,
``autoencoder.per_channel_statistics.*``, ``vocoder.ups.N``,
``vocoder.resblocks.M.convs1.K``); the released checkpoints keep the
autoencoder under ``audio_vae.`` and the vocoder under ``vocoder.``. Widths and
depths come from the tensor shapes; what shapes cannot tell (sample rate, hop
length, the vocoder's strides) from the file's ``config`` metadata, with the
released values as defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.base import WeightsSource
from ...model.detection import Shapes
from ...model.files import combined_reader
from ...model.quant import network_weights
from ...model.vae import AudioVAE, VAEModel
from .bigvgan import AMPBlock, activation, is_filter_key
from .bwe_vocoder import BWELayout, VocoderWithBWE

#: latent frames per spectrogram frame, and mel bins per latent bin
DOWNSAMPLE = 4
#: the rate VAEEncodeAudio resamples to for this VAE (ComfyUI's default; the VAE resamples on to its own)
INPUT_SAMPLE_RATE = 44100
#: waveforms are centre-cropped to whole multiples of this many samples before encoding, as ComfyUI crops them
ENCODE_MULTIPLE = 4096


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    log_step = math.log(6.4) / 27.0
    return torch.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / log_step)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    log_step = math.log(6.4) / 27.0
    return torch.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * torch.exp(log_step * (m - 15.0)))


def mel_filters(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular Slaney-normalised mel filters [n_fft / 2 + 1, n_mels] from 0 Hz to Nyquist."""
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1, dtype=torch.float64)
    top = torch.tensor(float(sample_rate) / 2.0, dtype=torch.float64)
    points = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(top)), n_mels + 2, dtype=torch.float64))
    widths = points[1:] - points[:-1]
    slopes = points[None, :] - freqs[:, None]
    rising, falling = -slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (filters * (2.0 / (points[2:] - points[:-2]))[None]).float()


def log_mel(waveform: torch.Tensor, layout: AudioLayout) -> torch.Tensor:
    """Waveform [B, C, samples] at the VAE's rate -> log-mel [B, C, frames, mel_bins] (hop-length frames,
    centred Hann windows, magnitudes, floored at 1e-5)."""
    b, c, n = waveform.shape
    window = torch.hann_window(layout.n_fft, device=waveform.device, dtype=torch.float32)
    spec = torch.stft(waveform.reshape(b * c, n).float(), layout.n_fft, layout.hop_length, window=window,
                      center=True, pad_mode="reflect", return_complex=True).abs()
    filters = mel_filters(layout.n_fft, layout.mel_bins, layout.sample_rate).to(spec.device)
    mel = torch.einsum("fm,bft->btm", filters, spec)
    return torch.log(mel.clamp(min=1e-5)).reshape(b, c, -1, layout.mel_bins)


@dataclass(frozen=True)
class AudioLayout:
    in_channels: int = 2
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    blocks: int = 2
    latent: int = 8
    double_z: bool = True
    out_channels: int = 2
    mel_bins: int = 64
    causal: bool = True
    sample_rate: int = 16000
    hop_length: int = 160
    n_fft: int = 1024


@dataclass(frozen=True)
class VocoderLayout:
    in_channels: int = 128
    width: int = 1024
    rates: tuple[int, ...] = (6, 5, 2, 2, 2)
    kernels: tuple[int, ...] = (16, 15, 8, 4, 4)
    res_kernels: tuple[int, ...] = (3, 7, 11)
    dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    out_channels: int = 2
    final_bias: bool = True
    final_tanh: bool = True
    output_sample_rate: int | None = None
    #: "1" (HiFi-GAN) or "AMP1" (BigVGAN v2, anti-aliased Snake / SnakeBeta activations: ``activation``)
    resblock: str = "1"
    activation: str = "snakebeta"
    #: tanh (``final_tanh``) or a clamp to [-1, 1] at the end; a bandwidth extender's generator has neither
    final_activation: bool = True
    #: LTX-2.3's bandwidth extension (bwe_vocoder.py)
    bwe: BWELayout | None = None


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-6)


class CausalConv2d(nn.Module):
    """A stride-1 convolution over [B, C, time, mel]; causal: the time padding all in front."""

    def __init__(self, ops: Any, cin: int, cout: int, kernel: int, causal: bool) -> None:
        super().__init__()
        self.conv = ops.Conv2d(cin, cout, kernel)
        p = kernel - 1
        self.padding = (p // 2, p - p // 2, p, 0) if causal else (p // 2, p - p // 2, p // 2, p - p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ResnetBlock(nn.Module):
    def __init__(self, ops: Any, cin: int, cout: int, causal: bool) -> None:
        super().__init__()
        self.conv1 = CausalConv2d(ops, cin, cout, 3, causal)
        self.conv2 = CausalConv2d(ops, cout, cout, 3, causal)
        if cin != cout:
            self.nin_shortcut = CausalConv2d(ops, cin, cout, 1, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(pixel_norm(x)))
        h = self.conv2(F.silu(pixel_norm(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class Downsample(nn.Module):
    """Stride-2 convolution; causal: two rows of zeros before the time axis, one after the mel axis."""

    def __init__(self, ops: Any, dim: int, causal: bool) -> None:
        super().__init__()
        self.conv = ops.Conv2d(dim, dim, 3, stride=2)
        self.padding = (0, 1, 2, 0) if causal else (0, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class Upsample(nn.Module):
    """Nearest 2x, a convolution; causal: the first time row dropped, so 1 + n rows become 1 + 2n."""

    def __init__(self, ops: Any, dim: int, causal: bool) -> None:
        super().__init__()
        self.conv = CausalConv2d(ops, dim, dim, 3, causal)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x[:, :, 1:] if self.causal else x


class Level(nn.Module):
    def __init__(self, ops: Any, cin: int, cout: int, blocks: int, causal: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(ops, cin if i == 0 else cout, cout, causal) for i in range(blocks))


class Mid(nn.Module):
    def __init__(self, ops: Any, dim: int, causal: bool) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ops, dim, dim, causal)
        self.block_2 = ResnetBlock(ops, dim, dim, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.block_1(x))


class Encoder(nn.Module):
    def __init__(self, ops: Any, layout: AudioLayout) -> None:
        super().__init__()
        ch, mult, causal = layout.ch, layout.ch_mult, layout.causal
        self.conv_in = CausalConv2d(ops, layout.in_channels, ch, 3, causal)
        self.down = nn.ModuleList()
        width = ch
        for i, m in enumerate(mult):
            level = Level(ops, width, ch * m, layout.blocks, causal)
            width = ch * m
            if i < len(mult) - 1:
                level.downsample = Downsample(ops, width, causal)
            self.down.append(level)
        self.mid = Mid(ops, width, causal)
        self.conv_out = CausalConv2d(ops, width, layout.latent * (2 if layout.double_z else 1), 3, causal)
        self.latent = layout.latent

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, 2, T, 64] -> posterior mean [B, 8, ceil(T / 4), 16]."""
        h = self.conv_in(mel)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(pixel_norm(self.mid(h))))[:, : self.latent]


class Decoder(nn.Module):
    def __init__(self, ops: Any, layout: AudioLayout) -> None:
        super().__init__()
        ch, mult, causal = layout.ch, layout.ch_mult, layout.causal
        width = ch * mult[-1]
        self.conv_in = CausalConv2d(ops, layout.latent, width, 3, causal)
        self.mid = Mid(ops, width, causal)
        levels: list[Level] = []
        for i in reversed(range(len(mult))):
            level = Level(ops, width, ch * mult[i], layout.blocks + 1, causal)
            width = ch * mult[i]
            if i > 0:
                level.upsample = Upsample(ops, width, causal)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.conv_out = CausalConv2d(ops, width, layout.out_channels, 3, causal)
        self.layout = layout

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, 8, t, 16] -> log-mel [B, 2, 4t - 3 (causal) or 4t, 64], cropped or zero-padded to that."""
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        out = self.conv_out(F.silu(pixel_norm(h)))
        frames = z.shape[2] * DOWNSAMPLE - ((DOWNSAMPLE - 1) if self.layout.causal else 0)
        frames, bins = max(frames, 1), self.layout.mel_bins
        out = out[:, : self.layout.out_channels, :frames, :bins]
        return F.pad(out, (0, bins - out.shape[3], 0, frames - out.shape[2]))


class Statistics(nn.Module):
    """Per-(channel, mel bin) latent mean and deviation, applied with channels and bins flattened together."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean-of-means", torch.empty(size))
        self.register_buffer("std-of-means", torch.empty(size))

    def normalize(self, z: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        b, c, t, f = z.shape
        flat = z.permute(0, 2, 1, 3).reshape(b, t, c * f)
        mean, std = self.get_buffer("mean-of-means").to(z), self.get_buffer("std-of-means").to(z)
        flat = flat * std + mean if inverse else (flat - mean) / std
        return flat.reshape(b, t, c, f).permute(0, 2, 1, 3)


class Autoencoder(nn.Module):
    def __init__(self, ops: Any, layout: AudioLayout) -> None:
        super().__init__()
        self.encoder = Encoder(ops, layout)
        self.decoder = Decoder(ops, layout)
        self.per_channel_statistics = Statistics(layout.latent * layout.mel_bins // DOWNSAMPLE)


class ResBlock(nn.Module):
    """HiFi-GAN's residual stack: per dilation, leaky ReLU, dilated conv, leaky ReLU, conv, added back."""

    def __init__(self, ops: Any, dim: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(ops.Conv1d(dim, dim, kernel, dilation=d, padding=d * (kernel - 1) // 2)
                                    for d in dilations)
        self.convs2 = nn.ModuleList(ops.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class Vocoder(nn.Module):
    def __init__(self, ops: Any, layout: VocoderLayout) -> None:
        super().__init__()
        self.layout = layout
        self.conv_pre = ops.Conv1d(layout.in_channels, layout.width, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        width = layout.width
        for rate, kernel in zip(layout.rates, layout.kernels, strict=True):
            self.ups.append(ops.ConvTranspose1d(width, width // 2, kernel, stride=rate, padding=(kernel - rate) // 2))
            width //= 2
            for k, d in zip(layout.res_kernels, layout.dilations, strict=True):
                self.resblocks.append(AMPBlock(ops, width, k, d, layout.activation) if self.amp
                                      else ResBlock(ops, width, k, d))
        self.act_post = activation(width, layout.activation) if self.amp else nn.LeakyReLU()
        self.conv_post = ops.Conv1d(width, layout.out_channels, 7, padding=3, bias=layout.final_bias)

    @property
    def amp(self) -> bool:
        return self.layout.resblock == "AMP1"

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, C, T, M] -> waveform [B, out_channels, T x prod(rates)]."""
        x = self.conv_pre(mel.transpose(2, 3).flatten(1, 2))
        n = len(self.layout.res_kernels)
        for i, up in enumerate(self.ups):
            x = up(x if self.amp else F.leaky_relu(x, 0.1))
            x = sum(self.resblocks[i * n + j](x) for j in range(n)) / n
        x = self.conv_post(self.act_post(x))
        if not self.layout.final_activation:
            return x
        return torch.tanh(x) if self.layout.final_tanh else x.clamp(-1, 1)


class LTX2AudioVAENet(nn.Module):
    """The autoencoder and the vocoder, each loaded from its own part of the checkpoint."""

    def __init__(self, autoencoder: Autoencoder, vocoder: Vocoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.vocoder = vocoder

    @classmethod
    def create(cls, layout: AudioLayout, vocoder: VocoderLayout, ops: Any = _ops.plain) -> LTX2AudioVAENet:
        return cls(Autoencoder(ops, layout), make_vocoder(ops, vocoder))

    @property
    def dtype(self) -> torch.dtype:
        conv = self.autoencoder.decoder.conv_in.conv
        return getattr(conv, "compute_dtype", None) or conv.weight.dtype

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, 2, T, 64] -> normalised latents [B, 8, t, 16]."""
        ae = self.autoencoder
        return ae.per_channel_statistics.normalize(ae.encoder(mel.to(self.dtype)))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, 8, t, 16] -> waveform [B, 2, samples]."""
        ae = self.autoencoder
        mel = ae.decoder(ae.per_channel_statistics.normalize(z.to(self.dtype), inverse=True))
        return self.vocoder(mel)


class LTX2AudioVAE(AudioVAE):
    """The audio VAE socket value: latents [B, 8, t, 16]; decode gives waveforms [B, samples, channels], encode
    takes them at :data:`INPUT_SAMPLE_RATE`."""

    audio_sample_rate = INPUT_SAMPLE_RATE

    def __init__(self, *args: Any, layout: AudioLayout, vocoder: VocoderLayout, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.layout = layout
        self.vocoder_layout = vocoder

    @property
    def sample_rate(self) -> int:
        return self.layout.sample_rate

    @property
    def output_sample_rate(self) -> int:
        rate = self.vocoder_layout.output_sample_rate
        if rate is not None:
            return int(rate)
        return int(self.layout.sample_rate * math.prod(self.vocoder_layout.rates) / self.layout.hop_length)

    @property
    def latent_frequency_bins(self) -> int:
        return self.layout.mel_bins // DOWNSAMPLE

    @property
    def latents_per_second(self) -> float:
        return self.layout.sample_rate / self.layout.hop_length / DOWNSAMPLE

    def num_of_latents_from_frames(self, frames_number: int, frame_rate: float) -> int:
        return math.ceil(float(frames_number) / frame_rate * self.latents_per_second)

    @torch.no_grad()
    def encode(self, pixel_samples: torch.Tensor) -> torch.Tensor:
        """Waveforms [B, samples, channels] at 44.1 kHz -> normalised latents [B, 8, t, 16].

        Centre-cropped to whole multiples of 4096 samples, mono repeated to stereo (extra channels
        dropped), resampled to the VAE's 16 kHz and turned into log-mels, as ComfyUI's VAE does.
        """
        from ...media.audio import resample

        length = pixel_samples.shape[1] // ENCODE_MULTIPLE * ENCODE_MULTIPLE
        start = (pixel_samples.shape[1] - length) // 2
        audio = pixel_samples[:, start: start + length].movedim(-1, 1).float()
        channels = self.layout.in_channels
        if audio.shape[1] < channels:
            audio = torch.cat([audio] + [audio[:, -1:]] * (channels - audio.shape[1]), dim=1)
        audio = resample(audio[:, :channels], INPUT_SAMPLE_RATE, self.layout.sample_rate)
        mel = log_mel(audio, self.layout)
        with self.patcher.use() as model:
            net = model.loaded_module
            out = [net.encode_mel(mel[i: i + 1].to(self.device)).float().cpu() for i in range(mel.shape[0])]
        return torch.cat(out)


def file_config(path: str) -> dict[str, Any]:
    """The ``config`` JSON a safetensors file keeps in its metadata (empty when it has none)."""
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("config")
    except Exception:  # noqa: BLE001 - not a safetensors file: no metadata
        return {}
    return json.loads(raw) if raw else {}


def _count(shapes: Shapes, pattern: str) -> int:
    n = 0
    while pattern.format(n) in shapes:
        n += 1
    return n


def audio_layout(shapes: Shapes, prefix: str, config: dict[str, Any]) -> AudioLayout:
    conv_in = shapes[prefix + "encoder.conv_in.conv.weight"]
    ch = int(conv_in[0])
    levels = _count(shapes, prefix + "encoder.down.{}.block.0.conv1.conv.weight")
    mult = tuple(int(shapes[f"{prefix}encoder.down.{i}.block.0.conv1.conv.weight"][0]) // ch for i in range(levels))
    latent = int(shapes[prefix + "decoder.conv_in.conv.weight"][1])
    params = config.get("model", {}).get("params", {})
    dd = params.get("encoder", params.get("ddconfig", {}))
    stft = config.get("preprocessing", {}).get("stft", {})
    return AudioLayout(
        in_channels=int(conv_in[1]), ch=ch, ch_mult=mult,
        blocks=_count(shapes, prefix + "encoder.down.0.block.{}.conv1.conv.weight"), latent=latent,
        double_z=int(shapes[prefix + "encoder.conv_out.conv.weight"][0]) == 2 * latent,
        out_channels=int(shapes[prefix + "decoder.conv_out.conv.weight"][0]),
        mel_bins=int(dd.get("mel_bins", 64)), causal=dd.get("causality_axis", "height") == "height",
        sample_rate=int(params.get("sampling_rate", config.get("sampling_rate", 16000))),
        hop_length=int(stft.get("hop_length", 160)), n_fft=int(stft.get("filter_length", 1024)))


def vocoder_layout(shapes: Shapes, prefix: str, config: dict[str, Any]) -> VocoderLayout:
    """The vocoder's shape: widths, kernels and the kind of residual block from the keys, strides and the final
    activation from the file's ``config`` (the released values when absent). LTX-2.3's files nest the vocoder
    (``vocoder.vocoder.``) beside a bandwidth extender (``vocoder.bwe_generator.``, ``vocoder.mel_stft.``)."""
    if prefix + "vocoder.conv_pre.weight" in shapes:
        bwe_config = config.get("bwe", {})
        generator = replace(_vocoder_layout(shapes, prefix + "bwe_generator.", bwe_config, BWE_GENERATOR),
                            final_activation=False)
        basis = shapes[prefix + "mel_stft.stft_fn.forward_basis"]
        bwe = BWELayout(generator=generator, input_rate=int(bwe_config.get("input_sampling_rate", 16000)),
                        output_rate=int(bwe_config.get("output_sampling_rate", 48000)),
                        hop_length=int(bwe_config.get("hop_length", 80)), n_fft=int(basis[-1]),
                        mels=int(shapes[prefix + "mel_stft.mel_basis"][0]))
        main = _vocoder_layout(shapes, prefix + "vocoder.", config.get("vocoder", {}), BWE_VOCODER)
        return replace(main, bwe=bwe, output_sample_rate=bwe.output_rate)
    return _vocoder_layout(shapes, prefix, config, VocoderLayout())


#: LTX-2.3's released vocoder strides (the first stage, then the bandwidth extender)
BWE_VOCODER = VocoderLayout(rates=(5, 2, 2, 2, 2, 2), kernels=(11, 4, 4, 4, 4, 4), resblock="AMP1")
BWE_GENERATOR = VocoderLayout(rates=(6, 5, 2, 2, 2), kernels=(12, 11, 4, 4, 4), resblock="AMP1")


def _vocoder_layout(shapes: Shapes, prefix: str, config: dict[str, Any], defaults: VocoderLayout) -> VocoderLayout:
    amp = prefix + "resblocks.0.acts1.0.act.alpha" in shapes
    if config.get("resblock", "AMP1" if amp else "1") not in ("1", "AMP1"):
        raise ValueError(f"LTX-2 vocoder residual blocks of kind {config.get('resblock')!r} are not supported yet")
    pre = shapes[prefix + "conv_pre.weight"]
    ups = _count(shapes, prefix + "ups.{}.weight")
    kernels = tuple(int(shapes[f"{prefix}ups.{i}.weight"][2]) for i in range(ups))
    rates = tuple(config.get("upsample_rates", defaults.rates if kernels == defaults.kernels else ()))
    if len(rates) != ups:
        raise ValueError("the LTX-2 vocoder's upsampling rates are not in the file's config")
    res_kernels = tuple(config.get("resblock_kernel_sizes", defaults.res_kernels))
    return VocoderLayout(
        in_channels=int(pre[1]), width=int(pre[0]), rates=rates, kernels=kernels, res_kernels=res_kernels,
        dilations=tuple(tuple(d) for d in config.get("resblock_dilation_sizes", defaults.dilations)),
        out_channels=int(shapes[prefix + "conv_post.weight"][0]), final_bias=prefix + "conv_post.bias" in shapes,
        final_tanh=bool(config.get("use_tanh_at_final", True)), output_sample_rate=config.get("output_sample_rate"),
        resblock="AMP1" if amp else "1",
        activation="snakebeta" if prefix + "resblocks.0.acts1.0.act.beta" in shapes else "snake",
        final_activation=bool(config.get("apply_final_activation", True)))


def load_audio_vae(path: str, prefix: str = "", shapes: Shapes | None = None) -> LTX2AudioVAE:
    """LTXVAudioVAELoader (and VAELoader, as current ComfyUI's): a file's ``audio_vae.`` autoencoder and
    ``vocoder.``."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel
    from .detect import AUDIO_PREFIX, VOCODER_PREFIX, is_audio_vae

    shapes = tensor_shapes(path) if shapes is None else shapes
    if not is_audio_vae(shapes):
        raise UnsupportedModel(f"{path.rsplit('/', 1)[-1]}: no LTX-2 audio VAE and vocoder in this file")
    config = file_config(path)
    layout = audio_layout(shapes, AUDIO_PREFIX, config.get("audio_vae", {}))
    vocoder = vocoder_layout(shapes, VOCODER_PREFIX, config.get("vocoder", {}))
    parts = {"autoencoder": AUDIO_PREFIX, "vocoder": VOCODER_PREFIX}
    # ComfyUI runs this VAE in float32 only
    sources = {name: network_weights(path, prefix, shapes, f"LTX-2 {name}", "vae",
                                     lambda ops, compute, name=name: _part(name, layout, vocoder, ops),
                                     supported=(torch.float32,),
                                     rename=lambda key: None if is_filter_key(key) else key)
               for name, prefix in parts.items()}

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        built = {name: source.build({k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(name + ".")})
                 for name, source in sources.items()}
        return LTX2AudioVAENet(built["autoencoder"], built["vocoder"])

    first = sources["autoencoder"]
    weights = WeightsSource(
        key="+".join(s.key for s in sources.values()),
        read=combined_reader([(s.read, name + ".") for name, s in sources.items()]), build=build,
        keys=frozenset(f"{name}.{k}" for name, s in sources.items() for k in s.keys),
        size=sum(s.size or 0 for s in sources.values()) or None, dtype=first.dtype, compute=first.compute)
    return LTX2AudioVAE(first_stage_model=VAEModel(weights), latent_channels=layout.latent,
                        downscale_ratio=DOWNSAMPLE, output_channels=layout.out_channels, latent_dim=2,
                        layout=layout, vocoder=vocoder)


def _part(name: str, layout: AudioLayout, vocoder: VocoderLayout, ops: Any) -> nn.Module:
    return Autoencoder(ops, layout) if name == "autoencoder" else make_vocoder(ops, vocoder)


def make_vocoder(ops: Any, layout: VocoderLayout) -> nn.Module:
    """The vocoder, with its bandwidth extender when the layout has one."""
    return VocoderWithBWE(ops, layout, layout.bwe) if layout.bwe is not None else Vocoder(ops, layout)
