"""Record ``reference.npz``: the tiny HuMo model, Whisper encoder and HuMo node inputs of
``tests/_files_wan_humo.py`` run through ComfyUI 0.3.64's code.

diffusers has no HuMo transformer, so ComfyUI's outputs are recorded once and
kept here. From a ComfyUI 0.3.64 checkout (CPU torch is enough), with this
repository at REPO and torchaudio's Python package importable (ComfyUI's
``whisper.py`` builds its log-mel with ``torchaudio.transforms.MelSpectrogram``;
a torchaudio wheel unpacked without its compiled libraries serves, as that
transform is plain torch code):

    cd COMFYUI && PYTHONPATH=TORCHAUDIO python REPO/plugins/core_nodes/tests/data/wan_humo/record.py

Recorded, in float32: the state-dict shapes of both networks; ``HumoWanModel``'s
forward for every case of ``transformer_inputs()`` (its audio projection and
audio attentions rebuilt from ComfyUI's own classes at the sizes of ``AUDIO``;
the inputs are rebuilt from their seed, their sums kept to check that);
``WhisperLargeV3``'s log-mel of ``speech()``, the hidden states
``WHISPER_LAYERS`` at ``WHISPER_POSITIONS``, and the sum and absolute sum of
every state; and what ``WanHuMoImageToVideo`` puts into the conditioning for
``whisper_states()`` (``NODE_CASES``), for a reference image through
``StubVAE``, and without sound or image.
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

from _files_wan_humo import (  # noqa: E402
    AUDIO,
    HUMO,
    NODE_CASES,
    WHISPER,
    WHISPER_LAYERS,
    WHISPER_POSITIONS,
    StubVAE,
    encoder_output,
    random_weights,
    reference_image,
    speech,
    transformer_inputs,
)


def _load(module: torch.nn.Module, skip: str = "") -> dict[str, list[int]]:
    shapes = {k: list(v.shape) for k, v in module.state_dict().items() if not (skip and k.startswith(skip))}
    missing, unexpected = module.load_state_dict(random_weights({k: tuple(v) for k, v in shapes.items()}),
                                                 strict=False)
    assert not unexpected and all(skip and k.startswith(skip) for k in missing)
    module.eval()
    return shapes


def main() -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ops
    from comfy.audio_encoders.whisper import WhisperLargeV3
    from comfy.ldm.wan.model import AudioCrossAttentionWrapper, AudioProjModel, HumoWanModel
    from comfy_extras.nodes_wan import WanHuMoImageToVideo

    out: dict[str, np.ndarray] = {}
    ops = comfy.ops.manual_cast
    model = HumoWanModel(**HUMO, device="cpu", dtype=torch.float32, operations=ops)
    model.audio_proj = AudioProjModel(**AUDIO, device="cpu", dtype=torch.float32, operations=ops)
    settings = {"operations": ops, "device": "cpu", "dtype": torch.float32}
    for block in model.blocks:
        block.audio_cross_attn_wrapper = AudioCrossAttentionWrapper(HUMO["dim"], AUDIO["output_dim"],
                                                                    HUMO["num_heads"], operation_settings=settings)
    out["humo_shapes"] = np.array(json.dumps(_load(model)))
    with torch.no_grad():
        for case, inputs in transformer_inputs().items():
            out[f"{case}_checksum"] = np.array([float(v.double().abs().sum()) for v in inputs.values()])
            args = {k: v for k, v in inputs.items() if k not in ("x", "timestep", "context")}
            out[f"{case}_out"] = model(inputs["x"], inputs["timestep"], inputs["context"], transformer_options={},
                                       **args).numpy()

    encoder = WhisperLargeV3(**WHISPER, device="cpu", dtype=torch.float32, operations=ops)
    out["whisper_shapes"] = np.array(json.dumps(_load(encoder, skip="feature_extractor.")))
    with torch.no_grad():
        mel = encoder.feature_extractor(speech())
        last, layers = encoder(speech())
    out["whisper_mel"] = mel.numpy()
    out["whisper_layers"] = torch.stack([layers[i][:, list(WHISPER_POSITIONS)] for i in WHISPER_LAYERS]).numpy()
    out["whisper_sums"] = np.array([[float(s.double().sum()), float(s.double().abs().sum())] for s in layers])
    assert torch.equal(last, layers[-1])

    cond = [[torch.zeros(1, 3, 8), {}]]
    for case, (length, samples) in NODE_CASES.items():
        positive, negative, latent = WanHuMoImageToVideo.execute(cond, cond, None, 32, 48, length, 1,
                                                                 audio_encoder_output=encoder_output(samples))
        out[f"node_{case}_audio_embed"] = positive[0][1]["audio_embed"].numpy()
        assert not negative[0][1]["audio_embed"].any()
        out[f"node_{case}_latent_shape"] = np.array(latent["samples"].shape)
    positive, negative, latent = WanHuMoImageToVideo.execute(cond, cond, StubVAE(), 32, 48, 9, 2,
                                                             ref_image=reference_image())
    out["node_reference"] = positive[0][1]["reference_latents"][-1].numpy()
    out["node_silence"] = positive[0][1]["audio_embed"].numpy()
    assert not negative[0][1]["reference_latents"][-1].any()
    out["node_silence_latent_shape"] = np.array(latent["samples"].shape)

    np.savez_compressed(HERE / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
