"""Record ``reference.npz``: ComfyUI 0.3.64's ``WanTrackToVideo`` on the inputs of ``tests/_files_wan_ati.py``.

The motion tracks are drawn on the start image's latents by code of ComfyUI's
own (no other implementation exists), so its outputs are recorded once and
kept here. From a ComfyUI 0.3.64 checkout (CPU torch is enough), with this
repository at REPO:

    cd COMFYUI && python REPO/plugins/core_nodes/tests/data/wan_ati/record.py

Recorded, in float32, per case of ``NODE_CASES``: the ``concat_mask`` and
``concat_latent_image`` the node puts into the positive conditioning (the
negative gets the same) and the empty latent's shape, with ``StubVAE``
standing in for the VAE; and, for an empty track list, the conditioning of
its fallback (WanImageToVideo's).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, os.getcwd())

from _files_wan_ati import NODE_CASES, StubVAE, start_images, tracks_json  # noqa: E402


def main() -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    from comfy_extras.nodes_wan import WanTrackToVideo

    out: dict[str, np.ndarray] = {}
    cond = [[torch.zeros(1, 3, 8), {}]]
    tracks = dict(tracks_json(), empty="[]")
    for case, args in dict(NODE_CASES, empty=NODE_CASES["single"]).items():
        positive, negative, latent = WanTrackToVideo.execute(cond, cond, StubVAE(), tracks[case],
                                                             start_image=start_images(), **args)
        for key in ("concat_mask", "concat_latent_image"):
            out[f"{case}_{key}"] = positive[0][1][key].numpy()
            assert torch.equal(negative[0][1][key], positive[0][1][key])
        out[f"{case}_latent_shape"] = np.array(latent["samples"].shape)

    np.savez_compressed(HERE / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
