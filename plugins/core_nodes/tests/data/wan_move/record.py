"""Record ``reference.npz``: the Wan-Move nodes of ComfyUI (``comfy_extras/nodes_wanmove.py``, newer than
0.3.64; recorded with 0.18.1) on the inputs of ``tests/_files_wan_move.py``.

From such a checkout, in an environment with its requirements (CPU torch is
enough), with this repository at REPO:

    cd COMFYUI && python REPO/plugins/core_nodes/tests/data/wan_move/record.py

Where torchvision cannot be imported beside the torch in use, its
``to_tensor`` (a PIL image to float CHW in 0..1) is stood in for by the same
arithmetic in numpy, the only torchvision function the module calls.
Recorded: GenerateTracks' path and visibility per case of ``GENERATE`` (and
one with ``frame_mask()``); WanMoveTracksFromCoords on ``coords_json()``,
``single_track_json()`` and with the mask; WanMoveConcatTrack of the
straight tracks and the coordinates; WanMoveTrackToVideo's conditioning with
those tracks (torch seeded with ``TRACK_SEED``, strengths 0.7 and 1, tracks
through ``StubVAE`` of ``_files_wan_humo``) and without tracks; and
WanMoveVisualizeTracks' images.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, os.getcwd())

from _files_wan_humo import StubVAE  # noqa: E402
from _files_wan_move import (  # noqa: E402
    GENERATE,
    REFERENCE,
    TRACK_SEED,
    coords_json,
    frame_mask,
    frames,
    single_track_json,
    start_image,
)


def _torchvision_stand_in() -> None:
    try:
        import torchvision.transforms.functional as functional
    except Exception:
        functional = types.ModuleType("torchvision.transforms.functional")
        transforms = types.ModuleType("torchvision.transforms")
        transforms.functional = functional
        sys.modules.update({"torchvision.transforms": transforms, "torchvision.transforms.functional": functional})
    if not hasattr(functional, "to_tensor"):
        functional.to_tensor = lambda pic: torch.from_numpy(np.array(pic)).permute(2, 0, 1).float().div(255)


def main() -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    _torchvision_stand_in()
    from comfy_extras import nodes_wanmove as wm

    out: dict[str, np.ndarray] = {}

    def keep(name: str, tracks: dict) -> dict:
        out[f"{name}_path"] = tracks["track_path"].numpy()
        out[f"{name}_visibility"] = tracks["track_visibility"].numpy()
        return tracks

    for name, args in GENERATE.items():
        tracks, length = wm.GenerateTracks.execute(**args).args
        keep(f"generate_{name}", tracks)
        out[f"generate_{name}_length"] = np.array(length)
    masked, _ = wm.GenerateTracks.execute(**GENERATE["straight"], track_mask=frame_mask()).args
    keep("generate_masked", masked)
    coords, length = wm.WanMoveTracksFromCoords.execute(coords_json()).args
    keep("coords", coords)
    out["coords_length"] = np.array(length)
    keep("coords_single", wm.WanMoveTracksFromCoords.execute(single_track_json()).args[0])
    keep("coords_masked", wm.WanMoveTracksFromCoords.execute(single_track_json(),
                                                            track_mask=frame_mask()[:7]).args[0])
    straight, _ = wm.GenerateTracks.execute(**GENERATE["straight"]).args
    joined = keep("concat", wm.WanMoveConcatTrack.execute(straight, coords).args[0])

    positive, negative = [[torch.ones(1, 2, 4), {"a": 1}]], [[torch.zeros(1, 2, 4), {"b": 2}]]
    for name, strength in (("move", 0.7), ("move_full", 1.0)):
        torch.manual_seed(TRACK_SEED)
        pos, neg, latent = wm.WanMoveTrackToVideo.execute(positive, negative, StubVAE(), 64, 48, 9, 1, strength,
                                                          tracks=joined, start_image=start_image()).args
        out[f"{name}_positive"] = pos[0][1]["concat_latent_image"].numpy()
        out[f"{name}_negative"] = neg[0][1]["concat_latent_image"].numpy()
        out[f"{name}_mask"] = pos[0][1]["concat_mask"].numpy()
        out[f"{name}_latent_shape"] = np.array(latent["samples"].shape)
    pos, _, _ = wm.WanMoveTrackToVideo.execute(positive, negative, StubVAE(), 64, 48, 9, 1, 1.0,
                                               start_image=start_image()).args
    out["still_positive"] = pos[0][1]["concat_latent_image"].numpy()

    (drawn,) = wm.WanMoveVisualizeTracks.execute(frames(), 4, 3, 0.8, 4, tracks=joined).args
    out["drawn"] = drawn.numpy()
    np.savez_compressed(REFERENCE, **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
