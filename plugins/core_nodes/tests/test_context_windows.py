"""Context windows: the schedules' windows, the fuse weights, and sampling through the handler.

The window lists were worked out by hand from the schedules' rules (ComfyUI
0.3.64's ``comfy/context_windows.py``). The sampling tests run the tiny SD1.5
checkpoint: its UNet treats batch entries independently, so windows over the
batch must reproduce the unwindowed prediction whatever the schedule and fuse
method, while an APPLY_MODEL wrapper counts the network calls and their sizes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _nodes import tiny_sd  # noqa: E402

from comfy_kernel_core_nodes.model import extension  # noqa: E402
from comfy_kernel_core_nodes.nodes import context_windows as nodes  # noqa: E402
from comfy_kernel_core_nodes.nodes import ksampler  # noqa: E402
from comfy_kernel_core_nodes.sampling import context_windows as cw  # noqa: E402

pytestmark = pytest.mark.timeout(900)

# --- schedules -----------------------------------------------------------------------------


def test_static_standard_moves_the_last_window_back_to_end_on_the_last_frame():
    assert cw.context_windows("standard_static", 10, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert cw.context_windows("standard_static", 8, 4, 2) == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert cw.context_windows("standard_static", 9, 4, 0) == [[0, 1, 2, 3], [4, 5, 6, 7], [5, 6, 7, 8]]
    assert cw.context_windows("standard_static", 4, 4, 1) == [[0, 1, 2, 3]]
    # the same windows at every step
    assert cw.context_windows("standard_static", 10, 4, 1, step=3) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]


def test_batched_cuts_without_overlap_and_a_short_last_window():
    assert cw.context_windows("batched", 10, 4, 2) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert cw.context_windows("batched", 8, 4, 0) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_ordered_halving_visits_the_binary_fractions():
    assert [cw.ordered_halving(s) for s in range(6)] == [0.0, 0.5, 0.25, 0.75, 0.125, 0.625]


def test_looped_uniform_wraps_and_shifts_with_the_step():
    assert cw.context_windows("looped_uniform", 8, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 0, 1]]
    # step 1 shifts by half the frames, step 2 by a quarter
    assert cw.context_windows("looped_uniform", 8, 4, 1, step=1) == [[4, 5, 6, 7], [7, 0, 1, 2], [2, 3, 4, 5]]
    assert cw.context_windows("looped_uniform", 8, 4, 1, step=2) == [[2, 3, 4, 5], [5, 6, 7, 0], [0, 1, 2, 3]]
    # closed_loop lets one more window start in the last overlap
    assert cw.context_windows("looped_uniform", 10, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert cw.context_windows("looped_uniform", 10, 4, 1, closed_loop=True) == [
        [0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 0, 1, 2]]


def test_uniform_stride_adds_windows_of_spaced_frames():
    assert cw.context_windows("looped_uniform", 16, 4, 0, stride=2) == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [0, 2, 4, 6], [8, 10, 12, 14]]
    # the stride is capped at what the length allows: 8 frames, windows of 4 -> at most 2
    assert cw.context_windows("looped_uniform", 8, 4, 0, stride=5) == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 2, 4, 6]]


def test_standard_uniform_moves_wrapping_windows_to_the_end():
    assert cw.context_windows("standard_uniform", 8, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [4, 5, 6, 7]]
    # step 1: [7, 0, 1, 2] becomes [4..7] (a repeat of the first, dropped) and [0..3] is added after it
    assert cw.context_windows("standard_uniform", 8, 4, 1, step=1) == [[4, 5, 6, 7], [0, 1, 2, 3], [2, 3, 4, 5]]
    for step in range(8):
        for windows in [cw.context_windows("standard_uniform", 11, 4, 2, step=step)]:
            assert all(w == list(range(w[0], w[0] + 4)) for w in windows)
            assert sorted({i for w in windows for i in w}) == list(range(11))


def test_overlap_not_smaller_than_the_length_is_refused():
    with pytest.raises(ValueError):
        cw.context_windows("standard_static", 10, 4, 4)
    with pytest.raises(ValueError):
        cw.IndexListContextHandler("spiral", "flat")


# --- fuse weights --------------------------------------------------------------------------


def test_fuse_weights():
    assert cw.fuse_weights("pyramid", [0, 1, 2, 3], 8, 1) == [1, 2, 2, 1]
    assert cw.fuse_weights("pyramid", [0, 1, 2, 3, 4], 8, 1) == [1, 2, 3, 2, 1]
    assert cw.fuse_weights("relative", [0, 1, 2], 8, 1) == [1, 2, 1]
    assert cw.fuse_weights("flat", [3, 4, 5], 8, 1) == [1, 1, 1]
    first = cw.fuse_weights("overlap-linear", [0, 1, 2, 3], 8, 2)
    middle = cw.fuse_weights("overlap-linear", [2, 3, 4, 5], 8, 2)
    last = cw.fuse_weights("overlap-linear", [4, 5, 6, 7], 8, 3)
    assert first == pytest.approx([1, 1, 1, 1e-37]) and middle == pytest.approx([1e-37, 1, 1, 1e-37])
    assert last == pytest.approx([1e-37, 0.5, 1, 1])


def _constant_windows(handler: cw.IndexListContextHandler, frames: int, sigmas: torch.Tensor,
                      step: int = 0) -> tuple[torch.Tensor, list[list[int]]]:
    """Fuse windows whose prediction is the window's number (1, 2, ...) everywhere; the windows seen."""
    seen: list[list[int]] = []

    def per_window(model: Any, conds: list, x: torch.Tensor, t: torch.Tensor, options: dict) -> list[torch.Tensor]:
        seen.append(options["transformer_options"]["context_window"].index_list)
        return [torch.full_like(x, float(len(seen))) for _ in conds]

    x = torch.zeros(frames, 2, 3)
    options = {"transformer_options": {"sample_sigmas": sigmas}}
    (out,) = handler.execute(per_window, None, [[]], x, sigmas[step].expand(frames), options)
    return out[:, 0, 0], seen


def test_weighted_fusing_averages_the_windows_by_their_weights():
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    handler = cw.IndexListContextHandler("standard_static", "pyramid", context_length=4, context_overlap=2)
    out, seen = _constant_windows(handler, 6, sigmas)
    assert seen == [[0, 1, 2, 3], [2, 3, 4, 5]]
    # pyramid 1,2,2,1: frame 2 = (1*2 + 2*1) / 3, frame 3 = (1*1 + 2*2) / 3
    assert out.tolist() == pytest.approx([1, 1, 4 / 3, 5 / 3, 2, 2])
    flat = cw.IndexListContextHandler("standard_static", "flat", context_length=4, context_overlap=2)
    assert _constant_windows(flat, 6, sigmas)[0].tolist() == pytest.approx([1, 1, 1.5, 1.5, 2, 2])


def test_relative_fusing_favours_the_window_a_frame_is_central_in():
    sigmas = torch.tensor([10.0, 5.0, 0.0])
    handler = cw.IndexListContextHandler("standard_static", "relative", context_length=4, context_overlap=2)
    out, _ = _constant_windows(handler, 6, sigmas)
    inner, edge = 1 - 0.5 / 1.505, 0.01  # bias of a window's two central positions and its two edges
    assert out.tolist() == pytest.approx([1, 1, (inner + 2 * edge) / (inner + edge),
                                          (edge + 2 * inner) / (inner + edge), 2, 2])


def test_the_uniform_schedules_take_the_step_from_the_sampler_sigmas():
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    handler = cw.IndexListContextHandler("looped_uniform", "flat", context_length=4, context_overlap=1)
    assert _constant_windows(handler, 8, sigmas, step=1)[1] == [[4, 5, 6, 7], [7, 0, 1, 2], [2, 3, 4, 5]]
    assert _constant_windows(handler, 8, sigmas, step=2)[1] == [[2, 3, 4, 5], [5, 6, 7, 0], [0, 1, 2, 3]]


def test_per_frame_conditioning_is_cut_to_the_window():
    from comfy_kernel_core_nodes.model.conds import CONDCrossAttn, CONDNoiseShape

    handler = cw.IndexListContextHandler("standard_static", "flat", context_length=2, dim=2)
    x = torch.zeros(1, 4, 5, 2, 2)
    concat = torch.arange(5.0).reshape(1, 1, 5, 1, 1).expand(1, 3, 5, 2, 2)
    text = torch.ones(1, 7, 5)  # 5 tokens wide, but not a latent-shaped tensor: kept whole
    entry = {"cross_attn": text, "model_conds": {"c_concat": CONDNoiseShape(concat),
                                                 "c_crossattn": CONDCrossAttn(text)}}
    (cut,) = handler.get_resized_cond([entry], x, cw.Window([3, 4], dim=2))
    assert cut["model_conds"]["c_concat"].cond[0, 0, :, 0, 0].tolist() == [3.0, 4.0]
    assert cut["model_conds"]["c_crossattn"].cond is text and cut["cross_attn"] is text
    assert handler.get_resized_cond(None, x, cw.Window([0, 1], dim=2)) is None


# --- sampling a tiny SD1.5 batch -----------------------------------------------------------


@pytest.fixture(scope="module")
def sd(tmp_path_factory, sd15_tiny_checkpoint, single_torch_thread):
    return tiny_sd(tmp_path_factory.mktemp("context_windows"), sd15_tiny_checkpoint, 8)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding of a differently sized batch (the random weights give values in the 100s)."""
    return float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


def _sample(sd: dict, model: Any, cfg: float = 7.0, steps: int = 2) -> torch.Tensor:
    (out,) = ksampler.KSampler().sample(model, 7, steps, cfg, "euler", "normal", sd["pos"], sd["neg"], sd["empty"])
    return out["samples"]


def _windowed(sd: dict, length: int, overlap: int = 1, schedule: str = "standard_static",
              fuse: str = "pyramid", **newer: Any) -> Any:
    """ContextWindowsManual over the batch; 0.3.64's behaviour unless newer options are given."""
    newer.setdefault("causal_window_fix", False)
    return nodes.ContextWindowsManual.execute(sd["model"], length, overlap, schedule, 1, False, fuse, 0,
                                              **newer).args[0]


def _count_calls(model: Any) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []

    def wrapper(executor: Any, x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        shapes.append(tuple(x.shape))
        return executor(x, t, *args, **kwargs)

    model.add_wrapper_with_key(extension.WrappersMP.APPLY_MODEL, "count", wrapper)
    return shapes


def test_windows_as_long_as_the_latent_change_nothing(sd):
    plain = _sample(sd, sd["model"])
    model = _windowed(sd, 8)
    calls = _count_calls(model)
    assert torch.equal(_sample(sd, model), plain)
    assert calls == [(16, 4, 8, 8)] * 2  # one call per step: 8 positive + 8 negative


def test_short_windows_call_the_model_once_per_window_with_window_sized_inputs(sd):
    model = _windowed(sd, 4)
    calls = _count_calls(model)
    out = _sample(sd, model, cfg=1.0)
    # windows [0..3], [3..6], [4..7] at each of the 2 steps; cfg 1 evaluates only the positive side
    assert calls == [(4, 4, 8, 8)] * 6
    assert _close(out, _sample(sd, sd["model"], cfg=1.0))


@pytest.mark.parametrize(("schedule", "fuse"), [(s, "pyramid") for s in cw.SCHEDULES] +
                         [("standard_static", f) for f in cw.FUSE_METHODS if f != "pyramid"])
def test_windows_over_independent_batch_entries_reproduce_the_full_batch(sd, schedule, fuse):
    """The UNet sees every image alone, so any fusing of identical per-image predictions is the prediction."""
    reference = sd.setdefault("reference", _sample(sd, sd["model"]))
    model = _windowed(sd, 3, 1, schedule, fuse)
    calls = _count_calls(model)
    out = _sample(sd, model)
    assert _close(out, reference)
    assert calls and all(c[0] <= 2 * 3 for c in calls)
    per_step = len(calls) // 2
    assert per_step >= math.ceil(8 / 3)


def test_causal_window_fix_evaluates_each_window_with_the_frame_before_it(sd):
    model = _windowed(sd, 4, causal_window_fix=True)
    calls = _count_calls(model)
    out = _sample(sd, model, cfg=1.0)
    # [0..3] has no frame before it; [3..6] and [4..7] run with frames 2 and 3 in front, dropped afterwards
    assert [c[0] for c in calls] == [4, 5, 5] * 2
    assert _close(out, _sample(sd, sd["model"], cfg=1.0))


def test_freenoise_gives_later_windows_reordered_earlier_noise(sd):
    model = _windowed(sd, 4, 2, freenoise=True)
    out = _sample(sd, model, cfg=1.0)
    plain = _sample(sd, sd["model"], cfg=1.0)
    assert _close(out[:4], plain[:4])
    # entries 4, 5 start from entries 0, 1's noise and 6, 7 from 2, 3's, each pair in a seeded order
    for later, earlier in ((out[4:6], out[0:2]), (out[6:8], out[2:4])):
        assert _close(later, earlier) or _close(later, earlier.flip(0))
    assert not _close(out[4:6], plain[4:6])


def test_apply_freenoise_by_hand():
    noise = torch.arange(8.0).reshape(8, 1)
    out = cw.apply_freenoise(noise.clone(), 0, 4, 2, seed=3)[:, 0].tolist()
    assert out[:4] == [0, 1, 2, 3] and sorted(out[4:6]) == [0, 1] and sorted(out[6:8]) == [2, 3]
    assert cw.apply_freenoise(noise.clone(), 0, 4, 2, seed=3)[:, 0].tolist() == out
    assert cw.apply_freenoise(noise.clone(), 0, 8, 2, seed=3).equal(noise)  # one window: nothing to reuse


def test_retained_positions_keep_the_whole_latents_content():
    full = torch.arange(6.0).reshape(1, 1, 6)
    window = cw.Window([3, 4, 5], dim=2, total=6)
    assert window.get_tensor(full, retain=[0])[0, 0].tolist() == [0, 4, 5]
    window.anchor = 2
    assert window.get_tensor(full)[0, 0].tolist() == [2, 3, 4, 5]
    handler = cw.IndexListContextHandler("standard_static", "flat", context_length=3, dim=2,
                                         cond_retain_index_list="0")
    from comfy_kernel_core_nodes.model.conds import CONDNoiseShape

    (cut,) = handler.get_resized_cond([{"model_conds": {"c_concat": CONDNoiseShape(full)}}], full,
                                      cw.Window([3, 4, 5], dim=2, total=6))
    assert cut["model_conds"]["c_concat"].cond[0, 0].tolist() == [0, 4, 5]
    assert cw.parse_index_list(" 0, 2 ") == [0, 2] and cw.parse_index_list("") == []


def test_split_conds_gives_each_window_the_entry_of_its_region():
    handler = cw.IndexListContextHandler("standard_static", "flat", context_length=4, split_conds_to_windows=True)
    entries = [{"name": "start"}, {"name": "end"}]
    x = torch.zeros(10, 1)
    names = [handler.get_resized_cond(entries, x, cw.Window(w, 0, 10))[0]["name"]
             for w in ([0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9])]
    assert names == ["start", "start", "end"]
    assert len(cw.IndexListContextHandler("batched", "flat").get_resized_cond(entries, x, cw.Window([0], 0, 10))) == 2


def test_wan_node_converts_video_frames_to_latent_frames(sd):
    model = nodes.WanContextWindowsManual.execute(sd["model"], 81, 30, "standard_static", 1, False,
                                                  "pyramid").args[0]
    handler = model.model_options["context_handler"]
    assert (handler.context_length, handler.context_overlap, handler.dim) == (21, 8, 2)
    assert "context_handler" not in sd["model"].model_options


# --- a tiny Wan 2.2 I2V model: windows over frames --------------------------------------------


def test_wan_windows_cut_the_latent_and_the_start_image_concat_per_window(single_torch_thread):
    """9 frames = 3 latent frames; windows of 5 frames (2 latent) run [0, 1] and [1, 2], each with the
    matching frames of the image concat (16 latent + 4 mask channels cut along time too)."""
    from _files_wan import TEXT_WIDTH, transformer_file

    from comfy_kernel_core_nodes.model.loading import load_diffusion_model

    patcher = load_diffusion_model(str(transformer_file("i2v22")))
    (model,) = nodes.WanContextWindowsManual.execute(patcher, 5, 4, "standard_static", 1, False, "flat").args
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def wrapper(executor: Any, x: torch.Tensor, t: torch.Tensor, c_concat: torch.Tensor, *args: Any,
                **kwargs: Any) -> Any:
        seen.append((tuple(x.shape), tuple(c_concat.shape)))
        return executor(x, t, c_concat, *args, **kwargs)

    model.add_wrapper_with_key(extension.WrappersMP.APPLY_MODEL, "count", wrapper)
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(1, 6, TEXT_WIDTH, generator=generator)
    start = torch.randn(1, 16, 3, 8, 8, generator=generator)
    mask = torch.ones(1, 1, 3, 8, 8)
    mask[:, :, 0] = 0
    positive = [[text, {"concat_latent_image": start, "concat_mask": mask}]]
    empty = {"samples": torch.zeros(1, 16, 3, 8, 8)}

    def run(m: Any) -> torch.Tensor:
        (out,) = ksampler.KSampler().sample(m, 3, 2, 1.0, "euler", "simple", positive, positive, empty)
        return out["samples"]

    out = run(model)
    assert seen == [((1, 16, 2, 8, 8), (1, 20, 2, 8, 8))] * 4  # 2 windows x 2 steps
    assert out.shape == (1, 16, 3, 8, 8) and torch.isfinite(out).all()
    assert not torch.allclose(out, run(patcher), atol=1e-3)  # attention over 2 frames, not 3
