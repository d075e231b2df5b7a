"""Wan-Move's nodes against ComfyUI's recorded outputs (``data/wan_move/record.py``: ComfyUI 0.18.1's
``nodes_wanmove``, newer than 0.3.64), on the inputs of ``_files_wan_move.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _files_wan_humo import StubVAE
from _files_wan_move import (
    GENERATE,
    TRACK_SEED,
    coords_json,
    frame_mask,
    frames,
    reference,
    single_track_json,
    start_image,
)

from comfy_kernel_core_nodes.families.wan.move import (
    GenerateTracks,
    WanMoveConcatTrack,
    WanMoveTracksFromCoords,
    WanMoveTrackToVideo,
    WanMoveVisualizeTracks,
)


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return reference()


def _same(tracks: dict, ref: dict[str, np.ndarray], name: str) -> None:
    np.testing.assert_allclose(tracks["track_path"].numpy(), ref[f"{name}_path"], rtol=0, atol=2e-5)
    np.testing.assert_array_equal(tracks["track_visibility"].numpy(), ref[f"{name}_visibility"])


@pytest.mark.parametrize("case", list(GENERATE))
def test_generated_tracks_match_comfyui(ref: dict[str, np.ndarray], case: str) -> None:
    tracks, length = GenerateTracks.execute(**GENERATE[case]).args
    _same(tracks, ref, f"generate_{case}")
    assert length == int(ref[f"generate_{case}_length"])


def test_mask_sets_the_frames_visibility(ref: dict[str, np.ndarray]) -> None:
    tracks, _ = GenerateTracks.execute(**GENERATE["straight"], track_mask=frame_mask()).args
    _same(tracks, ref, "generate_masked")
    assert tracks["track_visibility"][:, 0].tolist() == [False, True, True, False, False, True, True, True, True]


def test_tracks_from_coords_match_comfyui(ref: dict[str, np.ndarray]) -> None:
    tracks, length = WanMoveTracksFromCoords.execute(coords_json()).args
    _same(tracks, ref, "coords")
    assert length == int(ref["coords_length"]) == 9
    _same(WanMoveTracksFromCoords.execute(single_track_json()).args[0], ref, "coords_single")
    _same(WanMoveTracksFromCoords.execute(single_track_json(), track_mask=frame_mask()[:7]).args[0], ref,
          "coords_masked")


def test_unreadable_coords_are_refused() -> None:
    for text in ("[]", "not json", '{"x": 1}'):
        with pytest.raises(ValueError, match="no tracks"):
            WanMoveTracksFromCoords.execute(text)


def _joined() -> dict:
    straight, _ = GenerateTracks.execute(**GENERATE["straight"]).args
    coords, _ = WanMoveTracksFromCoords.execute(coords_json()).args
    return WanMoveConcatTrack.execute(straight, coords).args[0]


def test_concat_joins_the_track_sets(ref: dict[str, np.ndarray]) -> None:
    _same(_joined(), ref, "concat")
    single, _ = WanMoveTracksFromCoords.execute(single_track_json()).args
    assert WanMoveConcatTrack.execute(single).args[0] is single


@pytest.mark.parametrize(("case", "strength"), [("move", 0.7), ("move_full", 1.0)])
def test_track_to_video_matches_comfyui(ref: dict[str, np.ndarray], case: str, strength: float) -> None:
    positive, negative = [[torch.ones(1, 2, 4), {"a": 1}]], [[torch.zeros(1, 2, 4), {"b": 2}]]
    torch.manual_seed(TRACK_SEED)
    pos, neg, latent = WanMoveTrackToVideo.execute(positive, negative, StubVAE(), 64, 48, 9, 1, strength,
                                                   tracks=_joined(), start_image=start_image()).args
    np.testing.assert_allclose(pos[0][1]["concat_latent_image"].numpy(), ref[f"{case}_positive"], atol=1e-6)
    # as in ComfyUI the blend is made on the latents both prompts hold
    np.testing.assert_allclose(neg[0][1]["concat_latent_image"].numpy(), ref[f"{case}_negative"], atol=1e-6)
    np.testing.assert_array_equal(pos[0][1]["concat_mask"].numpy(), ref[f"{case}_mask"])
    assert tuple(latent["samples"].shape) == tuple(ref[f"{case}_latent_shape"]) == (1, 16, 3, 6, 8)
    assert pos[0][1]["a"] == 1 and neg[0][1]["b"] == 2


def test_tracks_move_the_latents(ref: dict[str, np.ndarray]) -> None:
    """Without tracks the start-image latents are WanImageToVideo's; with them some later positions change."""
    positive, negative = [[torch.ones(1, 2, 4), {}]], [[torch.zeros(1, 2, 4), {}]]
    pos, _, _ = WanMoveTrackToVideo.execute(positive, negative, StubVAE(), 64, 48, 9, 1, 1.0,
                                            start_image=start_image()).args
    still = pos[0][1]["concat_latent_image"]
    np.testing.assert_allclose(still.numpy(), ref["still_positive"], atol=1e-6)
    moved = torch.from_numpy(ref["move_full_positive"])
    changed = (moved - still).abs().amax(dim=1)[0]  # [frames, h, w]
    assert changed[0].max() == 0 and changed[1:].max() > 0.01


def test_visualized_tracks_match_comfyui(ref: dict[str, np.ndarray]) -> None:
    (drawn,) = WanMoveVisualizeTracks.execute(frames(), 4, 3, 0.8, 4, tracks=_joined()).args
    assert drawn.shape == (9, 48, 64, 3)
    np.testing.assert_array_equal((drawn.numpy() * 255).round(), (ref["drawn"] * 255).round())
    (same,) = WanMoveVisualizeTracks.execute(frames(), 4, 3, 0.8, 4).args
    assert same is not None and same.shape == frames().shape
