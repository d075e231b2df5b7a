"""AUDIO_ENCODER, what ``AudioEncoderLoader`` gives: a speech encoder file loaded as wav2vec2 or Whisper.

The kind is told from the keys, as ComfyUI tells it: wav2vec2
(``wav2vec2.py``, Wan S2V's encoder) has ``encoder.layer_norm``, Whisper
(``whisper.py``, HuMo's) ``model.encoder.embed_positions``.
:class:`AudioEncoder` answers ``encode_audio`` as ComfyUI's
``AudioEncoderModel`` does, whichever network is inside.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

#: the rate both encoders take their input at
SAMPLE_RATE = 16000


class UnsupportedAudioEncoder(ValueError):
    """The file holds no audio encoder this server can run."""


class AudioEncoder:
    """AUDIO_ENCODER: ``encode_audio(waveform, sample_rate)`` as ComfyUI's ``AudioEncoderModel`` answers it.

    The network (``forward(waveform [B, channels, samples] at 16 kHz)`` ->
    the last state and every hidden state) lives in the model manager, stored
    like text encoders and computed in float32.
    """

    model_sample_rate = SAMPLE_RATE

    def __init__(self, config: Any, weights: Any) -> None:
        from ...model.auxiliary import AuxiliaryModel
        from ...model.patcher import ModelPatcher

        self.config = config
        self.model = AuxiliaryModel(weights)
        self.patcher = ModelPatcher(self.model)
        self.patcher.is_clip = False
        self.load_device = self.patcher.load_device

    @torch.no_grad()
    def encode_audio(self, audio: torch.Tensor, sample_rate: int) -> dict[str, Any]:
        from ...media.audio import resample

        audio = resample(audio.float(), int(sample_rate), SAMPLE_RATE)
        with self.patcher.use() as holder:
            net = holder.loaded_module
            device = next(net.parameters()).device
            last, states = net(audio.to(device))
        return {"encoded_audio": last.cpu(), "encoded_audio_all_layers": tuple(s.cpu() for s in states),
                "audio_samples": audio.shape[2]}

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.patcher.model_state_dict()

    def load_sd(self, sd: dict[str, torch.Tensor]) -> Any:
        raise NotImplementedError("comfy-kernel loads audio encoders from files (AudioEncoderLoader)")


def network_encoder(path: str, prefix: str, config: Any, make: Callable[..., torch.nn.Module],
                    shapes: dict[str, tuple[int, ...]], rename: Callable[[str], str | None], weights_label: str,
                    module_label: str) -> AudioEncoder:
    """The AUDIO_ENCODER of the network ``make(config, ops)`` read from ``path``'s tensors under ``prefix``.

    ``shapes`` are the file's shapes under the network's names, ``rename`` maps a key (prefix removed) to
    the network's name; a network tensor the file lacks refuses the file by name.
    """
    from ...model import ops
    from ...model.auxiliary import file_weights
    from ...model.devices import storage_dtype
    from ...model.files import load_module

    with torch.device("meta"):
        wanted = frozenset(make(config, ops.plain).state_dict())
    missing = sorted(wanted - set(shapes))
    if missing:
        raise UnsupportedAudioEncoder(f"{os.path.basename(path)}: {len(missing)} {weights_label} weights missing, "
                                      f"e.g. {missing[:3]}")

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        with torch.device("meta"):
            net = make(config, ops.manual_cast)
        return load_module(net, sd, module_label)

    weights = file_weights(path, prefix, "audio_encoder", build, lambda: storage_dtype("text_encoder"), wanted,
                           rename=lambda key: (name if (name := rename(key)) in wanted else None))
    return AudioEncoder(config, weights)


def load(path: str) -> AudioEncoder:
    """AudioEncoderLoader: a wav2vec2 or Whisper file."""
    from ...model.files import tensor_shapes

    keys = tensor_shapes(path)
    if any(k.endswith("encoder.embed_positions.weight") for k in keys):
        from . import whisper

        return whisper.load(path)
    if any(k.removeprefix("wav2vec2.").startswith("encoder.") for k in keys):
        from . import wav2vec2

        return wav2vec2.load(path)
    raise UnsupportedAudioEncoder(f"{os.path.basename(path)}: no wav2vec2 or Whisper audio encoder")
