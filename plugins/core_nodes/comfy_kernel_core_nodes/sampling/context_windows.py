"""Context windows: a model evaluated on overlapping slices of a long latent.

Video and AnimateDiff-style models are trained on a fixed number of frames and
their memory grows with the frame count. ComfyUI's context windows (the
``ContextWindowsManual`` nodes) leave the sampler untouched and split every
evaluation instead: ``calc_cond_batch`` hands the whole latent to the handler
stored in ``model_options["context_handler"]``, which cuts the windowed
dimension (the batch for image models, dim 2 for Wan's ``[B, C, T, H, W]``)
into windows chosen by a *schedule*, slices the per-frame conditioning the same
way, runs each window through the normal batching path and blends the windows'
predictions with a *fuse method*'s per-position weights. A latent no longer
than a window is evaluated exactly as without the handler.

The schedules, weights and the slicing rules follow ComfyUI 0.3.64's
``comfy/context_windows.py`` so a workflow gives the same windows here. The
options current ComfyUI added (and its templates set) are here too: FreeNoise's
noise reordering, window positions that keep the whole latent's content, split
conditioning and the causal anchor frame. Where
0.3.64 would fail (a timestep batch longer than one when looking up the step,
slicing the timestep along a non-batch dimension) this module keeps the
evident intent instead, and it cuts only conditioning that really is per
position (see ``_slice_dim``): 0.3.64 leaves a video's concat image whole, which
the network cannot combine with a shorter window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# schedule names, as the nodes' combo lists them
STATIC_STANDARD = "standard_static"
UNIFORM_STANDARD = "standard_uniform"
UNIFORM_LOOPED = "looped_uniform"
BATCHED = "batched"
SCHEDULES = (STATIC_STANDARD, UNIFORM_STANDARD, UNIFORM_LOOPED, BATCHED)

# fuse method names
PYRAMID = "pyramid"
RELATIVE = "relative"
FLAT = "flat"
OVERLAP_LINEAR = "overlap-linear"
FUSE_METHODS = (PYRAMID, RELATIVE, FLAT, OVERLAP_LINEAR)


@dataclass
class Window:
    """One context window: the positions it covers along ``dim``.

    ``anchor`` is the position just before the window, evaluated with it and
    dropped from its output (``causal_window_fix``): causal video models treat
    a sequence's first frame differently, so a window should not start on a
    frame that is not the video's first.
    """

    index_list: list[int]
    dim: int = 0
    total: int = 0
    anchor: int | None = None

    @property
    def context_length(self) -> int:
        return len(self.index_list)

    @property
    def center_ratio(self) -> float:
        return (min(self.index_list) + max(self.index_list)) / (2 * max(self.total, 1))

    def get_tensor(self, full: torch.Tensor, device: Any = None, dim: int | None = None,
                   retain: list[int] | None = None) -> torch.Tensor:
        """The window's slice of ``full`` along ``dim`` (a batch of one is shared by every window).

        Window positions listed in ``retain`` keep ``full``'s content at the same
        positions (a start image that every window should see at its start).
        """
        dim = self.dim if dim is None else dim
        if dim == 0 and full.shape[0] == 1:
            return full if device is None else full.to(device)
        positions = ([self.anchor] if self.anchor is not None else []) + self.index_list
        out = full.index_select(dim, torch.tensor(positions, device=full.device))
        kept = [i for i in (retain or []) if i < out.size(dim) and i < full.size(dim)]
        if kept:
            index = torch.tensor(kept, device=full.device)
            out.index_copy_(dim, index, full.index_select(dim, index))
        return out if device is None else out.to(device)

    def add_window(self, full: torch.Tensor, to_add: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """Add ``to_add`` into the window's positions of ``full`` in place."""
        dim = self.dim if dim is None else dim
        full.index_add_(dim, torch.tensor(self.index_list, device=full.device), to_add.to(full.dtype))
        return full


# --- schedules ---------------------------------------------------------------------------------


def ordered_halving(step: int) -> float:
    """``step``'s 64 bits reversed, as a fraction of 2**64: 0, 1/2, 1/4, 3/4, 1/8 ... for steps 0, 1, 2 ...

    The uniform schedules shift their windows by this amount each step, so the
    window seams fall in different places from one step to the next.
    """
    reversed_bits = int(format(step, "064b")[::-1], 2)
    return reversed_bits / (1 << 64)


def _uniform_windows(num_frames: int, length: int, overlap: int, stride: int, step: int,
                     loop_end: bool) -> list[list[int]]:
    if length - overlap <= 0:
        raise ValueError(f"context_overlap ({overlap}) must be smaller than context_length ({length})")
    strides = min(stride, int(math.ceil(math.log2(num_frames / length))) + 1)
    shift = ordered_halving(step)
    windows: list[list[int]] = []
    for context_step in (1 << i for i in range(strides)):
        pad = int(round(num_frames * shift))
        end = num_frames + pad + (0 if loop_end else -overlap)
        for start in range(int(shift * context_step) + pad, end, length * context_step - overlap):
            windows.append([e % num_frames for e in range(start, start + length * context_step, context_step)])
    return windows


def windows_uniform_looped(num_frames: int, length: int, overlap: int, stride: int = 1, step: int = 0,
                           closed_loop: bool = False) -> list[list[int]]:
    """Evenly spaced windows that wrap around the end to the start (a looping animation)."""
    if num_frames < length:
        return [list(range(num_frames))]
    return _uniform_windows(num_frames, length, overlap, stride, step, closed_loop)


def _rolls_over(window: list[int]) -> int:
    """Position where a window wraps back to a smaller index, or -1."""
    for i in range(1, len(window)):
        if window[i] < window[i - 1]:
            return i
    return -1


def _shifted_to_end(window: list[int], num_frames: int) -> list[int]:
    """The same spacing, moved so that it ends on the last frame."""
    relative = [(v - window[0]) % num_frames for v in window]
    delta = num_frames - relative[-1] - 1
    return [v + delta for v in relative]


def windows_uniform_standard(num_frames: int, length: int, overlap: int, stride: int = 1,
                             step: int = 0) -> list[list[int]]:
    """The looped schedule without wrapping: a window that would wrap is moved to end on the last frame
    (plus a window starting where the wrap happened if the next one misses it); repeats are dropped."""
    if num_frames <= length:
        return [list(range(num_frames))]
    windows = _uniform_windows(num_frames, length, overlap, stride, step, False)
    duplicates: list[int] = []
    i = 0
    while i < len(windows):
        roll = _rolls_over(windows[i])
        if roll >= 0:
            roll_value = windows[i][roll]
            windows[i] = _shifted_to_end(windows[i], num_frames)
            if roll_value not in windows[(i + 1) % len(windows)]:
                windows.insert(i + 1, list(range(roll_value, roll_value + length)))
        if any(windows[i] == windows[j] for j in range(i)):
            duplicates.append(i)
        i += 1
    for i in reversed(duplicates):
        windows.pop(i)
    return windows


def windows_static_standard(num_frames: int, length: int, overlap: int, **_: Any) -> list[list[int]]:
    """The same windows every step: ``length - overlap`` apart, the last moved back to end on the last frame."""
    if num_frames <= length:
        return [list(range(num_frames))]
    delta = length - overlap
    if delta <= 0:
        raise ValueError(f"context_overlap ({overlap}) must be smaller than context_length ({length})")
    windows = []
    for start in range(0, num_frames, delta):
        if start + length >= num_frames:
            start = num_frames - length
            windows.append(list(range(start, start + length)))
            break
        windows.append(list(range(start, start + length)))
    return windows


def windows_batched(num_frames: int, length: int, **_: Any) -> list[list[int]]:
    """Consecutive windows without overlap; the last one is shorter when ``length`` does not divide."""
    if num_frames <= length:
        return [list(range(num_frames))]
    return [list(range(s, min(s + length, num_frames))) for s in range(0, num_frames, length)]


def context_windows(schedule: str, num_frames: int, length: int, overlap: int, stride: int = 1, step: int = 0,
                    closed_loop: bool = False) -> list[list[int]]:
    """The index lists ``schedule`` gives at sampling step ``step``."""
    if schedule == UNIFORM_LOOPED:
        return windows_uniform_looped(num_frames, length, overlap, stride, step, closed_loop)
    if schedule == UNIFORM_STANDARD:
        return windows_uniform_standard(num_frames, length, overlap, stride, step)
    if schedule == STATIC_STANDARD:
        return windows_static_standard(num_frames, length, overlap)
    if schedule == BATCHED:
        return windows_batched(num_frames, length)
    raise ValueError(f"Unknown context_schedule '{schedule}'.")


# --- fuse weights ------------------------------------------------------------------------------


def weights_flat(length: int) -> list[float]:
    return [1.0] * length


def weights_pyramid(length: int) -> list[float]:
    """1, 2, ... up to the middle and back down: positions near a window's edge count least."""
    half = (length + 1) // 2
    rising = list(range(1, half + 1))
    return [float(w) for w in rising + rising[::-1][length % 2:]]


def weights_overlap_linear(length: int, overlap: int, index_list: list[int], full_length: int) -> list[float]:
    """Ones, with linear ramps over the overlap at the edges shared with a neighbour window."""
    weights = torch.ones(length)
    if overlap > 0:
        ramp = torch.linspace(1e-37, 1.0, min(overlap, length))
        if min(index_list) > 0:
            weights[: ramp.numel()] = ramp
        if max(index_list) < full_length - 1:
            weights[length - ramp.numel():] = ramp.flip(0)
    return weights.tolist()


def fuse_weights(method: str, index_list: list[int], full_length: int, overlap: int) -> list[float]:
    """Per-position weights of one window for ``method`` (``relative`` uses the pyramid's)."""
    length = len(index_list)
    if method == FLAT:
        return weights_flat(length)
    if method in (PYRAMID, RELATIVE):
        return weights_pyramid(length)
    if method == OVERLAP_LINEAR:
        return weights_overlap_linear(length, overlap, index_list, full_length)
    raise ValueError(f"Unknown fuse_method '{method}'.")


def relative_bias(index_list: list[int]) -> torch.Tensor:
    """``relative`` fusing: how central each position is in its window (1 at the centre, at least 0.01)."""
    first, last = index_list[0], index_list[-1]
    idx = torch.tensor(index_list, dtype=torch.float64)
    bias = 1 - (idx - (first + last) / 2).abs() / ((last - first + 1e-2) / 2)
    return bias.clamp(min=1e-2)


def _along(values: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    """A 1-D tensor shaped to broadcast along ``dim`` of an ``ndim`` tensor."""
    shape = [1] * ndim
    shape[dim] = values.numel()
    return values.reshape(shape)


# --- the handler -------------------------------------------------------------------------------


class IndexListContextHandler:
    """What ``ContextWindowsManual`` stores as ``model_options["context_handler"]``."""

    def __init__(self, context_schedule: str, fuse_method: str, context_length: int = 1, context_overlap: int = 0,
                 context_stride: int = 1, closed_loop: bool = False, dim: int = 0, freenoise: bool = False,
                 cond_retain_index_list: str | list[int] = "", split_conds_to_windows: bool = False,
                 latent_retain_index_list: str | list[int] = "", causal_window_fix: bool = False) -> None:
        if context_schedule not in SCHEDULES:
            raise ValueError(f"Unknown context_schedule '{context_schedule}'.")
        if fuse_method not in FUSE_METHODS:
            raise ValueError(f"Unknown fuse_method '{fuse_method}'.")
        self.context_schedule = context_schedule
        self.fuse_method = fuse_method
        self.context_length = context_length
        self.context_overlap = context_overlap
        self.context_stride = context_stride
        self.closed_loop = closed_loop
        self.dim = dim
        self.freenoise = freenoise
        self.cond_retain_index_list = parse_index_list(cond_retain_index_list)
        self.split_conds_to_windows = split_conds_to_windows
        self.latent_retain_index_list = parse_index_list(latent_retain_index_list)
        self.causal_window_fix = causal_window_fix
        self._step = 0

    def should_use_context(self, model: Any, conds: list, x_in: torch.Tensor, timestep: torch.Tensor,
                           model_options: dict[str, Any]) -> bool:
        return x_in.ndim > self.dim and x_in.size(self.dim) > self.context_length

    def set_step(self, timestep: torch.Tensor, model_options: dict[str, Any]) -> None:
        """The sampling step this evaluation belongs to: the first schedule sigma equal to ``timestep``."""
        sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        if sigmas is None:
            self._step = 0
            return
        sigma = timestep.reshape(-1)[0].to(sigmas.device, sigmas.dtype)
        matches = torch.nonzero(torch.isclose(sigmas, sigma, rtol=1e-4))
        if matches.numel() > 0:  # a sampler's intermediate sigma keeps the step it belongs to
            self._step = int(matches[0].item())

    def get_context_windows(self, x_in: torch.Tensor) -> list[Window]:
        lists = context_windows(self.context_schedule, x_in.size(self.dim), self.context_length,
                                self.context_overlap, self.context_stride, self._step, self.closed_loop)
        full = x_in.size(self.dim)
        windows = [Window(w, self.dim, full) for w in lists]
        if self.causal_window_fix:
            for w in windows:
                if w.index_list[0] > 0:
                    w.anchor = w.index_list[0] - 1
        return windows

    def _slice_dim(self, key: str, value: torch.Tensor, x_in: torch.Tensor) -> int | None:
        """The dimension along which a conditioning tensor has one entry per windowed position, if any.

        Along the batch that is any tensor with the latent's batch size (above one);
        along another dimension only latent-shaped tensors (a concat image) and masks,
        which lack the channel dimension. Text embeddings stay whole even when their
        width happens to equal the window dimension's size.
        """
        full = x_in.size(self.dim)
        if self.dim == 0:
            return 0 if value.ndim > 0 and full > 1 and value.size(0) == full else None
        if value.ndim == x_in.ndim and value.size(self.dim) == full:
            return self.dim
        if key == "mask" and value.ndim == x_in.ndim - 1 and value.size(self.dim - 1) == full:
            return self.dim - 1
        return None

    def get_resized_cond(self, cond_in: list[dict[str, Any]] | None, x_in: torch.Tensor, window: Window,
                         device: Any = None) -> list[dict[str, Any]] | None:
        """Conditioning entries with every per-position tensor cut to the window."""
        if cond_in is None:
            return None
        if self.split_conds_to_windows and len(cond_in) > 1:
            # combined conditionings: each window takes the entry of its region of the video
            region = min(max(int(window.center_ratio * len(cond_in)), 0), len(cond_in) - 1)
            cond_in = [cond_in[region]]
        resized = []
        for entry in cond_in:
            out = dict(entry)
            for key, item in entry.items():
                if isinstance(item, torch.Tensor):
                    dim = self._slice_dim(key, item, x_in)
                    out[key] = item if dim is None else window.get_tensor(item, device, dim=dim)
                elif key == "model_conds" and isinstance(item, dict):
                    out[key] = self._resized_model_conds(item, x_in, window, device)
            resized.append(out)
        return resized

    def _resized_model_conds(self, conds: dict[str, Any], x_in: torch.Tensor, window: Window,
                             device: Any) -> dict[str, Any]:
        out = dict(conds)
        for key, value in conds.items():
            tensor = getattr(value, "cond", None)
            if key == "num_video_frames" and hasattr(value, "_copy_with"):
                out[key] = value._copy_with(window.context_length)
            elif isinstance(tensor, torch.Tensor):
                dim = self._slice_dim(key, tensor, x_in)
                if dim is not None:
                    out[key] = value._copy_with(window.get_tensor(tensor, device, dim=dim,
                                                                  retain=self.cond_retain_index_list))
        return out

    def execute(self, calc_cond_batch: Callable, model: Any, conds: list, x_in: torch.Tensor,
                timestep: torch.Tensor, model_options: dict[str, Any]) -> list[torch.Tensor]:
        """Every side's prediction for the whole of ``x_in``, blended from the windows' predictions."""
        from comfy_kernel.progress import throw_exception_if_processing_interrupted

        self.set_step(timestep, model_options)
        windows = self.get_context_windows(x_in)
        full = x_in.size(self.dim)
        relative = self.fuse_method == RELATIVE
        out = [torch.zeros_like(x_in) for _ in conds]
        counts = [torch.zeros(full, device=x_in.device, dtype=x_in.dtype) for _ in conds]
        for window in windows:
            throw_exception_if_processing_interrupted()
            model_options.setdefault("transformer_options", {})["context_window"] = window
            sub_x = window.get_tensor(x_in, retain=self.latent_retain_index_list)
            sub_t = window.get_tensor(timestep, dim=0) if self.dim == 0 and timestep.numel() == full else timestep
            sub_conds = [self.get_resized_cond(c, x_in, window) for c in conds]
            results = calc_cond_batch(model, sub_conds, sub_x, sub_t, model_options)
            if window.anchor is not None:
                results = [r.narrow(self.dim, 1, r.size(self.dim) - 1) for r in results]
            self._combine(x_in, window, results, out, counts, relative)
        model_options["transformer_options"].pop("context_window", None)
        if not relative:
            for side, count in zip(out, counts, strict=True):
                side /= _along(count, x_in.ndim, self.dim)
        return out

    def _combine(self, x_in: torch.Tensor, window: Window, results: list[torch.Tensor], out: list[torch.Tensor],
                 counts: list[torch.Tensor], relative: bool) -> None:
        index = torch.tensor(window.index_list, device=x_in.device)
        if relative:
            # a running average per position, each window weighted by how central the position is in it
            bias = relative_bias(window.index_list).to(x_in.device)
            for side, result, total in zip(out, results, counts, strict=True):
                seen = total.index_select(0, index).double()
                keep = _along((seen / (seen + bias)).to(x_in.dtype), x_in.ndim, self.dim)
                new = _along((bias / (seen + bias)).to(x_in.dtype), x_in.ndim, self.dim)
                blended = side.index_select(self.dim, index) * keep + result.to(side.dtype) * new
                side.index_copy_(self.dim, index, blended)
                total.index_add_(0, index, bias.to(total.dtype))
            return
        weights = torch.tensor(fuse_weights(self.fuse_method, window.index_list, x_in.size(self.dim),
                                            self.context_overlap), device=x_in.device, dtype=x_in.dtype)
        shaped = _along(weights, x_in.ndim, self.dim)
        for side, result, count in zip(out, results, counts, strict=True):
            window.add_window(side, result * shaped)
            count.index_add_(0, index, weights)


def parse_index_list(value: str | list[int] | None) -> list[int]:
    """``"0, 2"`` -> ``[0, 2]`` (the nodes take index lists as text)."""
    if not value:
        return []
    if isinstance(value, str):
        return [int(part.strip()) for part in value.split(",") if part.strip()]
    return [int(v) for v in value]


def apply_freenoise(noise: torch.Tensor, dim: int, length: int, overlap: int, seed: int) -> torch.Tensor:
    """FreeNoise: after the first window, each stride of new frames reuses the previous stride's noise in a
    seeded random order, so overlapping windows start from correlated noise and blend without seams."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    frames = noise.size(dim)
    delta = length - overlap
    if delta <= 0:
        return noise
    for start in range(0, frames - length, delta):
        place = start + length
        count = min(delta, frames - place)
        if count <= 0:
            break
        source = torch.randperm(count, generator=generator) + start
        noise.narrow(dim, place, count).copy_(noise.index_select(dim, source.to(noise.device)))
    return noise


def _freenoise_wrapper(executor: Any, guider: Any, sigmas: torch.Tensor, extra_args: dict[str, Any], callback: Any,
                       noise: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    handler = extra_args.get("model_options", {}).get("context_handler")
    if handler is not None and handler.freenoise and noise.ndim > handler.dim:
        noise = apply_freenoise(noise.clone(), handler.dim, handler.context_length, handler.context_overlap,
                                extra_args.get("seed") or 0)
    return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)


def attach(model: Any, handler: IndexListContextHandler) -> Any:
    """A clone of the MODEL patcher ``model`` that samples through ``handler`` (with FreeNoise's noise
    reordering wrapped around the sampler when the handler asks for it)."""
    from ..model import extension

    m = model.clone()
    m.model_options["context_handler"] = handler
    if handler.freenoise:
        m.add_wrapper_with_key(extension.WrappersMP.SAMPLER_SAMPLE, "context_windows_freenoise", _freenoise_wrapper)
    return m
