"""Whisper large v3's encoder as ComfyUI's audio encoders run it (``whisper_large_v3_fp16``): speech for HuMo.

The sound (channels averaged, 16 kHz) is cut or zero-padded to 30 seconds
and turned into Whisper's log-mel spectrogram: 400-sample periodic Hann
windows every 160 samples (centred, reflect-padded), the power spectrum
through 128 Slaney-normalised mel filters from 0 to 8 kHz, the last frame
dropped (3000 frames); log10 floored at 1e-10 and at 8 below the batch's
maximum, then (x + 4) / 4. The encoder: two 1-d convolutions with GELU (the
second of stride 2: 1500 frames, 50 a second), learned positions, pre-norm
blocks (keys without bias, exact GELU) and a final layer norm. As ComfyUI's
``encode_audio``, it gives the last state and every hidden state (the input
of each block and the final normed output: 33 for the large model).

Widths, depth and mel bands are read from the keys (heads of 64, as large v3
has 20 of 1280); names follow Hugging Face's ``WhisperModel`` under
``model.encoder.`` (bare ``encoder.`` too); the decoder's weights, which the
released file also holds, are not read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention
from .audio_encoder import SAMPLE_RATE, AudioEncoder, UnsupportedAudioEncoder

#: Whisper's window, hop, chunk (samples) and the top of its mel filters (Hz)
N_FFT, HOP_LENGTH, CHUNK_SAMPLES, F_MAX = 400, 160, 30 * SAMPLE_RATE, 8000.0


@dataclass(frozen=True)
class WhisperConfig:
    width: int = 1280
    layers: int = 32
    mels: int = 128
    positions: int = 1500
    ffn_dim: int = 5120

    @property
    def heads(self) -> int:
        return max(self.width // 64, 1)


def log_mel(audio: torch.Tensor, mels: int = 128) -> torch.Tensor:
    """Waveforms [B, channels, samples] at 16 kHz -> Whisper's log-mel spectrogram [B, mels, 3000] (float32)."""
    from ..ace_step_v1.vocoder import mel_filters

    x = audio.float().mean(dim=1)
    x = x[:, :CHUNK_SAMPLES] if x.shape[-1] > CHUNK_SAMPLES else F.pad(x, (0, CHUNK_SAMPLES - x.shape[-1]))
    window = torch.hann_window(N_FFT, device=x.device)
    power = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect",
                       return_complex=True).abs().pow(2)
    filters = mel_filters(mels, N_FFT, SAMPLE_RATE, 0.0, F_MAX).to(x.device)
    mel = torch.matmul(power.transpose(1, 2), filters).transpose(1, 2)[:, :, :-1]
    logs = mel.clamp(min=1e-10).log10()
    logs = torch.maximum(logs, logs.max() - 8.0)
    return (logs + 4.0) / 4.0


class Attention(nn.Module):
    def __init__(self, c: WhisperConfig, ops: Any) -> None:
        super().__init__()
        self.heads = c.heads
        self.q_proj = ops.Linear(c.width, c.width)
        self.k_proj = ops.Linear(c.width, c.width, bias=False)
        self.v_proj = ops.Linear(c.width, c.width)
        self.out_proj = ops.Linear(c.width, c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(optimized_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads))


class EncoderLayer(nn.Module):
    def __init__(self, c: WhisperConfig, ops: Any) -> None:
        super().__init__()
        self.self_attn = Attention(c, ops)
        self.self_attn_layer_norm = ops.LayerNorm(c.width)
        self.fc1 = ops.Linear(c.width, c.ffn_dim)
        self.fc2 = ops.Linear(c.ffn_dim, c.width)
        self.final_layer_norm = ops.LayerNorm(c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class Encoder(nn.Module):
    """Log-mel [B, mels, 3000] -> (last state [B, 1500, width], every hidden state)."""

    def __init__(self, c: WhisperConfig, ops: Any) -> None:
        super().__init__()
        self.conv1 = ops.Conv1d(c.mels, c.width, kernel_size=3, padding=1)
        self.conv2 = ops.Conv1d(c.width, c.width, kernel_size=3, stride=2, padding=1)
        self.embed_positions = ops.Embedding(c.positions, c.width)
        self.layers = nn.ModuleList([EncoderLayer(c, ops) for _ in range(c.layers)])
        self.layer_norm = ops.LayerNorm(c.width)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + _ops.cast_weight(self.embed_positions, "weight", x)[: x.shape[1]]
        states = []
        for layer in self.layers:
            states.append(x)
            x = layer(x)
        x = self.layer_norm(x)
        states.append(x)
        return x, tuple(states)


class Whisper(nn.Module):
    """``forward(waveform [B, channels, samples] at 16 kHz)`` -> (last state, every hidden state)."""

    def __init__(self, config: WhisperConfig, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, ops)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self.encoder(log_mel(waveform, self.config.mels))


def config_from_keys(shapes: dict[str, tuple[int, ...]]) -> WhisperConfig | None:
    """The layout of a Whisper encoder's state dict (names from ``encoder.``), or None."""
    conv = shapes.get("encoder.conv1.weight")
    positions = shapes.get("encoder.embed_positions.weight")
    ffn = shapes.get("encoder.layers.0.fc1.weight")
    if conv is None or positions is None or ffn is None:
        return None
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    return WhisperConfig(width=int(conv[0]), layers=layers, mels=int(conv[1]), positions=int(positions[0]),
                         ffn_dim=int(ffn[0]))


def load(path: str) -> AudioEncoder:
    """A Whisper file (the encoder under ``model.encoder.`` or ``encoder.``) as AUDIO_ENCODER."""
    from ...model.files import tensor_shapes
    from .audio_encoder import network_encoder

    keys = tensor_shapes(path)
    prefix = "model.encoder." if any(k.startswith("model.encoder.") for k in keys) else "encoder."
    shapes = {"encoder." + k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}
    config = config_from_keys(shapes)
    if config is None:
        raise UnsupportedAudioEncoder(f"{os.path.basename(path)}: not a Whisper encoder")
    return network_encoder(path, prefix, config, Whisper, shapes, lambda key: "encoder." + key, "Whisper encoder",
                           "Whisper audio encoder")
