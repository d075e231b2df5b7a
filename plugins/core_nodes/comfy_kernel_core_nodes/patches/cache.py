"""EasyCache and LazyCache: skip network evaluations whose output can be predicted from the last one.

Both track how much the network's output changes relative to its input
(the *transformation rate*) on 8x-subsampled tensors. Inside the configured
part of the schedule, each step adds rate x input change / output norm to a
running estimate of the output's relative change; while that estimate stays
under ``reuse_threshold`` the network is not run and the last output - input
difference is added to the new input instead.

* EasyCache works per network call (a DIFFUSION_MODEL wrapper) and keeps one
  difference per conditioning entry (by uuid); the first entry seen decides for
  the whole step.
* LazyCache works on the guided prediction (a PREDICT_NOISE wrapper), so it
  suits any model, with one difference for the whole step.

An OUTER_SAMPLE wrapper gives each sampling run a fresh state, with the
schedule percents turned into sigmas for the model.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

STATE_KEY = "easycache"


class CacheState:
    """What both caches track between evaluations; subclasses say what is compared and stored."""

    name = "cache"

    def __init__(self, reuse_threshold: float, start_percent: float, end_percent: float, subsample_factor: int = 8,
                 verbose: bool = False) -> None:
        self.reuse_threshold = reuse_threshold
        self.start_percent = start_percent
        self.end_percent = end_percent
        self.subsample_factor = subsample_factor
        self.verbose = verbose
        self.start_t = 0.0
        self.end_t = 0.0
        self.reset()

    def clone(self) -> CacheState:
        return type(self)(self.reuse_threshold, self.start_percent, self.end_percent, self.subsample_factor,
                          self.verbose)

    def reset(self) -> CacheState:
        self.relative_transformation_rate: torch.Tensor | float | None = None
        self.cumulative_change_rate: Any = 0.0
        self.x_prev_subsampled: torch.Tensor | None = None
        self.output_prev_subsampled: torch.Tensor | None = None
        self.output_prev_norm: torch.Tensor | None = None
        self.total_steps_skipped = 0
        self.state_metadata: tuple | None = None
        return self

    def prepare_timesteps(self, model_sampling: Any) -> CacheState:
        self.start_t = model_sampling.percent_to_sigma(self.start_percent)
        self.end_t = model_sampling.percent_to_sigma(self.end_percent)
        return self

    def is_past_end(self, sigma: torch.Tensor) -> bool:
        return not bool(sigma[0] > self.end_t)

    def in_range(self, sigma: torch.Tensor) -> bool:
        return bool(sigma[0] <= self.start_t)

    def metadata(self, x: torch.Tensor) -> tuple:
        return (x.device, x.dtype, tuple(x.shape[1:]))

    def check_metadata(self, x: torch.Tensor) -> None:
        """A new device, dtype or shape mid-run makes the stored tensors useless: start over."""
        metadata = self.metadata(x)
        if self.state_metadata is None:
            self.state_metadata = metadata
        elif metadata != self.state_metadata:
            log.warning("%s - tensor shape, dtype or device changed, resetting its state", self.name)
            self.reset()

    def _subsample(self, x: torch.Tensor, clone: bool = True) -> torch.Tensor:
        if self.subsample_factor > 1:
            x = x[..., ::self.subsample_factor, ::self.subsample_factor]
        return x.clone() if clone else x

    def predicted_change_small(self, input_change: torch.Tensor) -> bool:
        """Accumulate the predicted relative output change; True while it stays under the threshold."""
        if self.output_prev_norm is None or self.relative_transformation_rate is None:
            return False
        self.cumulative_change_rate += (self.relative_transformation_rate * input_change) / self.output_prev_norm
        skip = bool(self.cumulative_change_rate < self.reuse_threshold)
        if self.verbose:
            log.info("%s [verbose] - %s step; cumulative_change_rate: %s, reuse_threshold: %s", self.name,
                     "skipping" if skip else "NOT skipping", float(self.cumulative_change_rate), self.reuse_threshold)
        if not skip:
            self.cumulative_change_rate = 0.0
        return skip

    def learn(self, output_sub: torch.Tensor, input_change: torch.Tensor | None) -> None:
        """Update the transformation rate from a real evaluation's output change."""
        if self.output_prev_norm is not None:
            output_change = (output_sub - self.output_prev_subsampled).flatten().abs().mean()
            if input_change is not None:
                self.relative_transformation_rate = output_change / input_change

    def report(self, total_steps: int) -> None:
        remaining = total_steps - self.total_steps_skipped
        speedup = total_steps / remaining if remaining else 1.0
        log.info("%s - skipped %d/%d steps (%.2fx speedup).", self.name, self.total_steps_skipped, total_steps,
                 speedup)


class EasyCacheState(CacheState):
    name = "EasyCache"

    def reset(self) -> EasyCacheState:
        super().reset()
        self.initial_step = True
        self.skip_current_step = False
        self.first_cond_uuid: Any = None
        self.uuid_cache_diffs: dict[Any, torch.Tensor] = {}
        return self

    def subsample(self, x: torch.Tensor, uuids: list, clone: bool = True) -> torch.Tensor:
        """The first conditioning entry's part of a batch, subsampled."""
        size = x.shape[0] // len(uuids)
        index = uuids.index(self.first_cond_uuid)
        return self._subsample(x[index * size:(index + 1) * size], clone)

    def apply_cache_diff(self, x: torch.Tensor, uuids: list) -> torch.Tensor:
        if self.first_cond_uuid in uuids:
            self.total_steps_skipped += 1
        size = x.shape[0] // len(uuids)
        for i, uuid in enumerate(uuids):
            diff = self.uuid_cache_diffs[uuid]
            if x.shape[1:] != diff.shape[1:]:  # fewer frames than cached (video): keep the trailing part
                x = x[(slice(i * size, (i + 1) * size),) + tuple(
                    slice(dx - dd, None) if dd != dx else slice(None) for dd, dx in zip(diff.shape[1:], x.shape[1:],
                                                                                      strict=True))]
            x += diff.to(x.device)
        return x

    def update_cache_diff(self, output: torch.Tensor, x: torch.Tensor, uuids: list) -> None:
        if output.shape[1:] != x.shape[1:]:
            x = x[(slice(None),) + tuple(slice(dx - do, None) if do != dx else slice(None)
                                         for do, dx in zip(output.shape[1:], x.shape[1:], strict=True))]
        diff = output - x
        size = diff.shape[0] // len(uuids)
        for i, uuid in enumerate(uuids):
            self.uuid_cache_diffs[uuid] = diff[i * size:(i + 1) * size]


class LazyCacheState(CacheState):
    name = "LazyCache"

    def reset(self) -> LazyCacheState:
        super().reset()
        self.cache_diff: torch.Tensor | None = None
        return self

    def metadata(self, x: torch.Tensor) -> tuple:
        return (x.device, x.dtype, tuple(x.shape))


def easycache_forward_wrapper(executor: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    """DIFFUSION_MODEL wrapper: the network call, or the cached difference added to its input."""
    x = args[0]
    options = args[-1] if isinstance(args[-1], dict) else kwargs.get("transformer_options") or args[-2]
    state: EasyCacheState = options[STATE_KEY]
    sigmas, uuids = options["sigmas"], options["uuids"]
    if sigmas is not None and state.is_past_end(sigmas):
        return executor(*args, **kwargs)
    has_first = state.first_cond_uuid in uuids
    x_prev = x
    input_change = None
    if state.in_range(sigmas):
        state.check_metadata(x)
        if state.skip_current_step:  # the first entry decided to skip this step
            return state.apply_cache_diff(x, uuids)
        if state.initial_step:
            state.first_cond_uuid = uuids[0]
            has_first = True
            state.initial_step = False
        if has_first:
            if state.x_prev_subsampled is not None:
                input_change = (state.subsample(x, uuids, clone=False) - state.x_prev_subsampled).flatten().abs().mean()
            if input_change is not None and state.predicted_change_small(input_change):
                state.skip_current_step = True
                return state.apply_cache_diff(x, uuids)
    output = executor(*args, **kwargs)
    if has_first:
        state.learn(state.subsample(output, uuids, clone=False), input_change)
    state.update_cache_diff(output, x_prev, uuids)
    if has_first:
        state.x_prev_subsampled = state.subsample(x_prev, uuids)
        state.output_prev_subsampled = state.subsample(output, uuids)
        state.output_prev_norm = output.flatten().abs().mean()
    return output


def easycache_calc_cond_batch_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """CALC_COND_BATCH wrapper: each evaluation decides afresh whether to skip."""
    args[-1]["transformer_options"][STATE_KEY].skip_current_step = False
    return executor(*args, **kwargs)


def lazycache_predict_noise_wrapper(executor: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    """PREDICT_NOISE wrapper: the guided prediction, or the cached difference added to the input."""
    x, sigma, model_options = args[0], args[1], args[2]
    state: LazyCacheState = model_options["transformer_options"][STATE_KEY]
    if state.is_past_end(sigma):
        return executor(*args, **kwargs)
    x_prev = x
    input_change = None
    if state.in_range(sigma):
        state.check_metadata(x)
        if state.x_prev_subsampled is not None:
            input_change = (state._subsample(x, clone=False) - state.x_prev_subsampled).flatten().abs().mean()
            if state.predicted_change_small(input_change):
                state.total_steps_skipped += 1
                return x + state.cache_diff.to(x.device)
    output = executor(*args, **kwargs)
    state.learn(state._subsample(output, clone=False), input_change)
    state.cache_diff = output - x_prev
    state.x_prev_subsampled = state._subsample(x_prev)
    state.output_prev_subsampled = state._subsample(output)
    state.output_prev_norm = output.flatten().abs().mean()
    return output


def cache_sample_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """OUTER_SAMPLE wrapper: a fresh state per sampling run, its schedule percents as the model's sigmas."""
    from ..model.patcher import create_model_options_clone

    guider = executor.class_obj
    original = guider.model_options
    guider.model_options = create_model_options_clone(original)
    to = guider.model_options["transformer_options"]
    to[STATE_KEY] = to[STATE_KEY].clone().prepare_timesteps(guider.model_patcher.model.model_sampling)
    state: CacheState = to[STATE_KEY]
    log.info("%s enabled - threshold: %s, start_percent: %s, end_percent: %s", state.name, state.reuse_threshold,
             state.start_percent, state.end_percent)
    try:
        return executor(*args, **kwargs)
    finally:
        state.report(len(args[3]) - 1)
        state.reset()
        guider.model_options = original
