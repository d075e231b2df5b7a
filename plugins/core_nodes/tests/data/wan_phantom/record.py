"""Record ``reference.npz``: Phantom's subject frames through ComfyUI 0.3.64's Wan transformer and node.

diffusers' Wan transformer has no way to append frames after the video's, so
ComfyUI's outputs are recorded once and kept here. From a ComfyUI 0.3.64
checkout (CPU torch is enough), with this repository at REPO:

    cd COMFYUI && python REPO/plugins/core_nodes/tests/data/wan_phantom/record.py

Recorded, in float32: the state-dict shapes of a 256-wide, two-block ``WanModel``
(text to video); its forward for each case of ``CASES`` of ``_files_wan_phantom`` (two subject frames after
three video frames; a height that needs padding; no subjects), weights from
``random_weights`` of ``_files_wan_s2v``; and what ``WanPhantomSubjectToVideo``
returns for three subject images through ``StubVAE`` of ``_files_wan_humo``.
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

from _files_wan_humo import StubVAE  # noqa: E402
from _files_wan_phantom import CASES, REFERENCE, WAN, case_inputs, subject_images  # noqa: E402
from _files_wan_s2v import random_weights  # noqa: E402


def main() -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    from comfy_extras.nodes_wan import WanPhantomSubjectToVideo

    out: dict[str, np.ndarray] = {}
    model = WanModel(**WAN, device="cpu", dtype=torch.float32, operations=comfy.ops.manual_cast)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(random_weights({k: tuple(v) for k, v in shapes.items()}), strict=True)
    model.eval()
    out["wan_shapes"] = np.array(json.dumps(shapes))
    for name in CASES:
        inputs = case_inputs(name)
        with torch.no_grad():
            y = model(inputs["x"], inputs["timestep"], inputs["context"],
                      time_dim_concat=inputs.get("time_dim_concat"))
        out[f"{name}_out"] = y.float().numpy()
        out[f"{name}_checksum"] = np.array([float(v.double().abs().sum()) for v in inputs.values()])

    positive, negative = [[torch.ones(1, 2, 4), {"a": 1}]], [[torch.zeros(1, 2, 4), {"b": 2}]]
    result = WanPhantomSubjectToVideo.execute(positive, negative, StubVAE(), 32, 48, 9, 2, subject_images())
    pos, neg_text, neg_img_text, latent = result.args
    out["node_positive"] = pos[0][1]["time_dim_concat"].numpy()
    out["node_negative_text"] = neg_text[0][1]["time_dim_concat"].numpy()
    out["node_negative_img_text"] = neg_img_text[0][1]["time_dim_concat"].numpy()
    out["node_latent_shape"] = np.array(latent["samples"].shape)
    np.savez_compressed(REFERENCE, **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
