"""ACE-Step 1.0 music generation (``ace_step_v1_3.5b``): the linear-attention DiT with its lyric encoder,
umt5-base for the tags and ACE-Step's lyrics tokenizer, the music DC-AE over mel spectrograms with its
HiFi-GAN vocoder (44.1 kHz stereo).

Importing this package stays light (the node list is read at start-up);
:func:`register` adds the detectors when a loader first needs them.
"""

from __future__ import annotations

from typing import Any


def register(detection: Any, clip_types: dict[str, Any]) -> None:
    from . import models, vae

    detection.ARCHITECTURES["ace_step_v1"] = models.transformer_config
    detection.MODEL_CONFIGS.extend(models.CONFIGS)
    detection.VAES.append(detection.VAEKind("ace_v1_dcae", vae.is_ace_v1_vae, vae.ace_v1_vae))
