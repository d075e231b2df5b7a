"""AUDIO values: decoding with PyAV, FLAC/MP3/Opus encoding, resampling and shelving filters.

An AUDIO value is ``{"waveform": tensor [B, C, T] float32, "sample_rate": int}``,
as ComfyUI passes it between nodes. The encoders write exactly what ComfyUI's
audio save nodes write (same codecs, bit rates and Opus rate rule), so the
files and their embedded ``prompt``/``workflow`` tags are interchangeable.
"""

from __future__ import annotations

import io
import math
from typing import Any

import av
import numpy as np
import torch

#: Sample rates the Opus encoder accepts; other rates are resampled to the next one up.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MP3_QUALITIES = ("V0", "128k", "320k")
OPUS_QUALITIES = ("64k", "96k", "128k", "192k", "320k")
_BIT_RATES = {"64k": 64000, "96k": 96000, "128k": 128000, "192k": 192000, "320k": 320000}


def audio_value(waveform: torch.Tensor, sample_rate: int) -> dict[str, Any]:
    return {"waveform": waveform, "sample_rate": int(sample_rate)}


def to_float(samples: torch.Tensor) -> torch.Tensor:
    """Integer PCM scaled to [-1, 1) as float32; float samples as float32."""
    if samples.dtype.is_floating_point:
        return samples.to(torch.float32)
    if samples.dtype == torch.int16:
        return samples.to(torch.float32) / 2**15
    if samples.dtype == torch.int32:
        return samples.to(torch.float32) / 2**31
    if samples.dtype == torch.uint8:
        return (samples.to(torch.float32) - 128.0) / 128.0
    raise ValueError(f"Unsupported audio sample type: {samples.dtype}")


def decode(source: Any) -> tuple[torch.Tensor, int]:
    """``(waveform [C, T] float32, sample_rate)`` of the first audio stream of a file (or file object)."""
    with av.open(source) as container:
        if not container.streams.audio:
            raise ValueError("No audio stream found in the file.")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        channels = stream.channels
        chunks = []
        for frame in container.decode(stream):
            data = torch.from_numpy(np.array(frame.to_ndarray()))
            if data.shape[0] != channels:  # packed formats interleave all channels in one row
                data = data.reshape(-1, channels).t()
            chunks.append(data)
    if not chunks:
        raise ValueError("No audio frames decoded.")
    return to_float(torch.cat(chunks, dim=1)), rate


def opus_rate(sample_rate: int) -> int:
    """The rate an Opus file of ``sample_rate`` audio is written at (ComfyUI's rule)."""
    if sample_rate > 48000:
        return 48000
    if sample_rate in OPUS_RATES:
        return sample_rate
    return next((r for r in OPUS_RATES if r > sample_rate), 48000)


def encode(waveform: torch.Tensor, sample_rate: int, fmt: str, quality: str | None = None,
           metadata: dict[str, str] | None = None) -> bytes:
    """One clip ``[C, T]`` as the bytes of a ``flac``, ``mp3`` or ``opus`` file."""
    if waveform.dim() != 2 or waveform.shape[0] not in (1, 2):
        raise ValueError(f"Audio must be mono or stereo [channels, samples]; got shape {tuple(waveform.shape)}")
    waveform = waveform.detach().to("cpu", torch.float32)
    rate = int(sample_rate)
    if fmt == "opus":
        rate = opus_rate(rate)
        if rate != sample_rate:
            waveform = resample(waveform, int(sample_rate), rate)
    layout = "mono" if waveform.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as out:
        for key, value in (metadata or {}).items():
            out.metadata[key] = value
        if fmt == "opus":
            stream = out.add_stream("libopus", rate=rate, layout=layout)
            if quality in _BIT_RATES:
                stream.bit_rate = _BIT_RATES[quality]
        elif fmt == "mp3":
            stream = out.add_stream("libmp3lame", rate=rate, layout=layout)
            if quality == "V0":
                stream.codec_context.qscale = 1
            elif quality in _BIT_RATES:
                stream.bit_rate = _BIT_RATES[quality]
        elif fmt == "flac":
            stream = out.add_stream("flac", rate=rate, layout=layout)
        else:
            raise ValueError(f"Unsupported audio format: {fmt}")
        interleaved = waveform.t().reshape(1, -1).contiguous().numpy()
        frame = av.AudioFrame.from_ndarray(interleaved, format="flt", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int, lowpass_width: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """Band-limited resampling along the last dimension (Hann-windowed sinc interpolation).

    The same filter torchaudio's default ``resample`` uses (6 zero crossings, a
    cut-off at 99 % of the lower Nyquist rate), so audio merged or saved as Opus
    sounds as it does in ComfyUI; runs on the waveform's device.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError("Sample rates must be positive")
    if orig_rate == new_rate:
        return waveform
    common = math.gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // common, int(orig_rate) // common
    cutoff = min(up, down) * rolloff
    half = math.ceil(lowpass_width * down / cutoff)
    dtype = waveform.dtype if waveform.is_floating_point() else torch.float32
    taps = torch.arange(-half, half + down, dtype=dtype, device=waveform.device) / down
    phase = torch.arange(0, up, dtype=dtype, device=waveform.device)[:, None] / up
    t = ((taps[None, :] - phase) * cutoff).clamp(-lowpass_width, lowpass_width)
    window = torch.cos(t * (math.pi / (2 * lowpass_width))) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = (sinc * window * (cutoff / down))[:, None, :]
    shape, length = waveform.shape, waveform.shape[-1]
    flat = torch.nn.functional.pad(waveform.reshape(-1, 1, length).to(dtype), (half, half + down))
    out = torch.nn.functional.conv1d(flat, kernel, stride=down)  # [N, up, frames]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = (up * length + down - 1) // down
    return out[:, :target].reshape(*shape[:-1], target)


def match_rates(a: torch.Tensor, rate_a: int, b: torch.Tensor, rate_b: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Bring two waveforms to the higher of their two rates."""
    if rate_a == rate_b:
        return a, b, rate_a
    if rate_a > rate_b:
        return a, resample(b, rate_b, rate_a), rate_a
    return resample(a, rate_a, rate_b), b, rate_b


# --- shelving and peaking filters (RBJ audio-EQ cookbook), as the equalizer node uses them ---

def _biquad(waveform: torch.Tensor, b: tuple[float, ...], a: tuple[float, ...]) -> torch.Tensor:
    from scipy.signal import lfilter

    filtered = lfilter(np.asarray(b) / a[0], np.asarray(a) / a[0], waveform.detach().cpu().double().numpy(), axis=-1)
    return torch.from_numpy(filtered).to(waveform).clamp(-1.0, 1.0)


def low_shelf(waveform: torch.Tensor, sample_rate: int, gain_db: float, freq: float, q: float = 0.707) -> torch.Tensor:
    big_a, w0 = 10 ** (gain_db / 40), 2 * math.pi * freq / sample_rate
    alpha, cos = math.sin(w0) / (2 * q), math.cos(w0)
    root = 2 * math.sqrt(big_a) * alpha
    b = (big_a * ((big_a + 1) - (big_a - 1) * cos + root), 2 * big_a * ((big_a - 1) - (big_a + 1) * cos),
         big_a * ((big_a + 1) - (big_a - 1) * cos - root))
    a = ((big_a + 1) + (big_a - 1) * cos + root, -2 * ((big_a - 1) + (big_a + 1) * cos),
         (big_a + 1) + (big_a - 1) * cos - root)
    return _biquad(waveform, b, a)


def high_shelf(waveform: torch.Tensor, sample_rate: int, gain_db: float, freq: float, q: float = 0.707) -> torch.Tensor:
    big_a, w0 = 10 ** (gain_db / 40), 2 * math.pi * freq / sample_rate
    alpha, cos = math.sin(w0) / (2 * q), math.cos(w0)
    root = 2 * math.sqrt(big_a) * alpha
    b = (big_a * ((big_a + 1) + (big_a - 1) * cos + root), -2 * big_a * ((big_a - 1) + (big_a + 1) * cos),
         big_a * ((big_a + 1) + (big_a - 1) * cos - root))
    a = ((big_a + 1) - (big_a - 1) * cos + root, 2 * ((big_a - 1) - (big_a + 1) * cos),
         (big_a + 1) - (big_a - 1) * cos - root)
    return _biquad(waveform, b, a)


def peaking(waveform: torch.Tensor, sample_rate: int, gain_db: float, freq: float, q: float) -> torch.Tensor:
    big_a, w0 = 10 ** (gain_db / 40), 2 * math.pi * freq / sample_rate
    alpha, cos = math.sin(w0) / (2 * q), math.cos(w0)
    b = (1 + alpha * big_a, -2 * cos, 1 - alpha * big_a)
    a = (1 + alpha / big_a, -2 * cos, 1 - alpha / big_a)
    return _biquad(waveform, b, a)
