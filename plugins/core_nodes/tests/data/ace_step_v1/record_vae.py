"""Record ``vae_reference.npz``: the small MusicDCAE of ``tests/_files_ace_step_v1_vae.py`` run by ComfyUI.

ComfyUI's VAE (``comfy.sd.VAE``) is built from the helper's weights, with
its MusicDCAE shrunk to the helper's configs (MusicDCAE's default configs are swapped), and run on the CPU in float32.
Run with ComfyUI's Python, from the repository root:

    COMFYUI=path/to/ComfyUI path/to/ComfyUI/.venv/bin/python \\
        plugins/core_nodes/tests/data/ace_step_v1/record_vae.py [path/to/ComfyUI]

torchaudio's Python code must be importable (its ``MelScale`` makes the mel
filters; only pure-torch functions are used, so a wheel whose compiled
extension does not load beside this torch serves once its ``lib/*.so`` are
removed); torchvision is replaced by the one transform MusicDCAE uses.

Recorded: the state dict's shapes (ComfyUI's names, the mel buffers
included); the log-mel of the helper's 0.3 s waveform after VAE.encode's crop
to whole 4096-sample frames (ComfyUI's filters, not the file's: the weights
leave the buffers out); ``VAE.encode`` of that waveform ([1, T, 2]);
``VAE.decode`` of the latent it gives (linear attention) and of a two-frame
latent (quadratic attention).
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))

from _files_ace_step_v1_vae import (  # noqa: E402
    DCAE_CONFIG,
    MEL_KEYS,
    SEED,
    VOCODER_CONFIG,
    short_latent,
    vae_weights,
    waveform,
)


def _torchvision_transforms() -> None:
    """MusicDCAE only uses ``transforms.Compose([transforms.Normalize(0.5, 0.5)])``."""
    module = sys.modules.get("torchvision.transforms") or types.ModuleType("torchvision.transforms")

    def normalize(mean: float, std: float):
        return lambda x: (x - mean) / std

    def compose(steps):
        def run(x):
            for step in steps:
                x = step(x)
            return x
        return run

    module.Normalize, module.Compose = normalize, compose
    sys.modules["torchvision.transforms"] = module


def main() -> None:
    comfyui = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["COMFYUI"]).resolve()
    sys.path.insert(0, str(comfyui))
    sys.argv = [sys.argv[0], "--cpu", "--fp32-vae"]
    import torchvision  # noqa: F401
    _torchvision_transforms()
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ldm.ace.vae.music_dcae_pipeline as pipeline
    import comfy.sd

    small = pipeline.MusicDCAE
    small.__init__.__defaults__ = (None, DCAE_CONFIG, VOCODER_CONFIG)  # what comfy.sd.VAE builds
    state = small(44100).state_dict()
    shapes = {k: list(v.shape) for k, v in state.items()}
    weights = vae_weights(SEED, {k: tuple(v) for k, v in shapes.items()})

    check = small(44100)
    missing, unexpected = check.load_state_dict(weights, strict=False)
    assert set(missing) == set(MEL_KEYS) and not unexpected, (missing, unexpected)

    vae = comfy.sd.VAE(sd=weights)
    assert isinstance(vae.first_stage_model, small) and vae.vae_dtype == torch.float32
    audio = waveform()[None]  # [1, 2, T]
    with torch.no_grad():
        latent = vae.encode(audio.movedim(1, -1))
        crop = audio.shape[-1] // 4096 * 4096
        start = (audio.shape[-1] - crop) // 2
        mel = vae.first_stage_model.vocoder.mel_transform(audio[0, :, start: start + crop])
        decoded = vae.decode(latent)
        short = short_latent()
        decoded_short = vae.decode(short)
    out = {
        "shapes": np.array(json.dumps(shapes)), "mel": mel.numpy(), "latent": latent.numpy(),
        "decoded": decoded.numpy(), "short_latent": short.numpy(), "decoded_short": decoded_short.numpy(),
    }
    np.savez_compressed(HERE / "vae_reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
