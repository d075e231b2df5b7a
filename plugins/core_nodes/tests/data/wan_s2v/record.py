"""Record ``reference.npz``: the tiny Wan S2V model and wav2vec2 encoder of ``tests/_files_wan_s2v.py``
run through ComfyUI 0.3.64's code.

diffusers has no S2V transformer, so ComfyUI's outputs are recorded once and
kept here. From a ComfyUI 0.3.64 checkout (CPU torch is enough; torchaudio is
not needed), with this repository at REPO:

    cd COMFYUI && python REPO/plugins/core_nodes/tests/data/wan_s2v/record.py

Recorded, in float32: the state-dict shapes of both networks; ``WanModel_S2V``'s
forward for every case of ``transformer_inputs()`` (the inputs are rebuilt from
their seed; their sums are kept to check that); ``Wav2Vec2Model``'s last hidden
state and those of ``WAV2VEC2_LAYERS`` for ``waveform()`` at 16 kHz;
and what ``WanSoundImageToVideo`` / ``WanSoundImageToVideoExtend`` put into the
conditioning for ``audio_features()`` (a 9-frame clip, then extensions at
latent frame 3 and 6).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, os.getcwd())

from _files_wan_s2v import (  # noqa: E402
    S2V,
    WAV2VEC2,
    WAV2VEC2_LAYERS,
    audio_features,
    random_weights,
    transformer_inputs,
    waveform,
)


def _load(module: torch.nn.Module) -> dict[str, list[int]]:
    shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
    missing, unexpected = module.load_state_dict(random_weights({k: tuple(v) for k, v in shapes.items()}))
    assert not missing and not unexpected
    module.eval()
    return shapes


def main() -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ops
    from comfy.audio_encoders.wav2vec2 import Wav2Vec2Model
    from comfy.ldm.wan.model import WanModel_S2V
    from comfy_extras.nodes_wan import WanSoundImageToVideo, WanSoundImageToVideoExtend

    out: dict[str, np.ndarray] = {}
    model = WanModel_S2V(**S2V, device="cpu", dtype=torch.float32, operations=comfy.ops.manual_cast)
    out["s2v_shapes"] = np.array(json.dumps(_load(model)))
    with torch.no_grad():
        for case, inputs in transformer_inputs().items():
            out[f"{case}_checksum"] = np.array([float(v.double().abs().sum()) for v in inputs.values()])
            args = {k: v for k, v in inputs.items() if k not in ("x", "timestep", "context")}
            out[f"{case}_out"] = model(inputs["x"], inputs["timestep"], inputs["context"], transformer_options={},
                                       **args).numpy()

    encoder = Wav2Vec2Model(**WAV2VEC2, device="cpu", dtype=torch.float32, operations=comfy.ops.manual_cast)
    out["wav2vec2_shapes"] = np.array(json.dumps(_load(encoder)))
    with torch.no_grad():
        last, layers = encoder(waveform())
    out["wav2vec2_last"] = last.numpy()
    out["wav2vec2_layers"] = torch.stack([layers[i] for i in WAV2VEC2_LAYERS]).numpy()

    features = audio_features()
    encoded = {"encoded_audio": features[-1:], "encoded_audio_all_layers": tuple(f[None] for f in features),
               "audio_samples": 12800}
    cond = [[torch.zeros(1, 3, 8), {}]]
    positive, negative, latent = WanSoundImageToVideo.execute(cond, cond, None, 32, 48, 9, 2,
                                                              audio_encoder_output=encoded)
    out["node_audio_embed"] = positive[0][1]["audio_embed"].numpy()
    out["node_negative_audio_embed"] = negative[0][1]["audio_embed"].numpy()
    out["node_control_video"] = positive[0][1]["control_video"].numpy()
    out["node_latent_shape"] = np.array(latent["samples"].shape)
    for frames in (3, 6):
        previous = {"samples": torch.arange(16 * frames * 24, dtype=torch.float32).reshape(1, 16, frames, 4, 6)}
        positive, _, latent = WanSoundImageToVideoExtend.execute(cond, cond, None, 9, previous,
                                                                 audio_encoder_output=encoded)
        options = positive[0][1]
        out[f"extend{frames}_has_audio"] = np.array("audio_embed" in options)
        if "audio_embed" in options:
            out[f"extend{frames}_audio_embed"] = options["audio_embed"].numpy()
        out[f"extend{frames}_reference_motion"] = options["reference_motion"].numpy()
        out[f"extend{frames}_latent_shape"] = np.array(latent["samples"].shape)

    np.savez_compressed(HERE / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
