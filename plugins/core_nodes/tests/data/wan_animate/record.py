"""Record ``reference.npz``: the tiny Animate model and the WanAnimateToVideo inputs of
``tests/_files_wan_animate.py`` run through ComfyUI 0.3.64's code.

diffusers has no Animate transformer, so ComfyUI's outputs are recorded once
and kept here. From a ComfyUI 0.3.64 checkout (CPU torch is enough), with
this repository at REPO:

    cd COMFYUI && python REPO/plugins/core_nodes/tests/data/wan_animate/record.py

Recorded, in float32: the network's state-dict shapes (its stored blur
filters listed apart); ``AnimateWanModel``'s forward for every case of
``transformer_inputs()`` (the inputs rebuilt from their seed, their sums kept
to check that); for the "face" case also the motion vectors of its crops and
the face tokens the blocks see; and, per case of ``node_cases()``, what
``WanAnimateToVideo`` returns through ``StubVAE``: the conditioning's tensors
(the 512x512 face pixels as sums and a strided sample), the latent's shape
and the three integers.
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

from _files_wan_animate import (  # noqa: E402
    ANIMATE,
    FACE_STRIDE,
    ClipVisionStub,
    StubVAE,
    animate_weights,
    node_cases,
    transformer_inputs,
)


def _sample(face: torch.Tensor) -> np.ndarray:
    return face[..., :: FACE_STRIDE[0], :: FACE_STRIDE[1]].numpy()


def main() -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ops
    from comfy.ldm.wan.model_animate import AnimateWanModel
    from comfy_extras.nodes_wan import WanAnimateToVideo

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    out: dict[str, np.ndarray] = {}
    model = AnimateWanModel(**ANIMATE, device="cpu", dtype=torch.float32, operations=comfy.ops.manual_cast)
    everything = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    kernels = sorted(k for k in everything if k.endswith(".kernel"))
    shapes = {k: v for k, v in everything.items() if k not in kernels}
    missing, unexpected = model.load_state_dict(animate_weights(shapes), strict=False)
    assert not unexpected and sorted(missing) == kernels
    model.eval()
    out["animate_shapes"] = np.array(json.dumps({k: list(v) for k, v in shapes.items()}))
    out["animate_kernels"] = np.array(json.dumps(kernels))
    with torch.no_grad():
        for case, inputs in transformer_inputs().items():
            out[f"{case}_checksum"] = np.array([float(v.double().abs().sum()) for v in inputs.values()])
            args = {k: v for k, v in inputs.items() if k not in ("x", "timestep", "context")}
            out[f"{case}_out"] = model(inputs["x"], inputs["timestep"], inputs["context"], transformer_options={},
                                       **args).numpy()
            print(case, out[f"{case}_out"].shape, flush=True)
        faces = transformer_inputs()["face"]["face_pixel_values"]
        out["face_motion"] = model.motion_encoder.get_motion(faces[0].movedim(0, 1)).numpy()
        _, tokens = model.after_patch_embedding(torch.zeros(1, ANIMATE["dim"], 4, 2, 3), None, faces)
        out["face_tokens"] = tokens.numpy()

    cond = [[torch.zeros(1, 3, 8), {}]]
    clip = ClipVisionStub()
    for case, inputs in node_cases().items():
        positive, negative, latent, trim_latent, trim_image, offset = WanAnimateToVideo.execute(
            cond, cond, StubVAE(), clip_vision_output=clip, **inputs)
        out[f"node_{case}_ints"] = np.array([trim_latent, trim_image, offset])
        out[f"node_{case}_latent_shape"] = np.array(latent["samples"].shape)
        assert not latent["samples"].any()
        pos, neg = positive[0][1], negative[0][1]
        assert pos["clip_vision_output"] is clip and neg["clip_vision_output"] is clip
        for key in ("concat_latent_image", "concat_mask", "pose_video_latent"):
            if key in pos:
                assert torch.equal(pos[key], neg[key])
                out[f"node_{case}_{key}"] = pos[key].numpy()
        if "face_video_pixels" in pos:
            face = pos["face_video_pixels"]
            out[f"node_{case}_face_shape"] = np.array(face.shape)
            out[f"node_{case}_face_sums"] = np.array([float(face.double().sum()), float(face.double().abs().sum())])
            out[f"node_{case}_face_sample"] = _sample(face)
            assert torch.equal(neg["face_video_pixels"], torch.full_like(face, -1.0))
        out[f"node_{case}_keys"] = np.array(json.dumps(sorted(pos)))

    np.savez_compressed(HERE / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
