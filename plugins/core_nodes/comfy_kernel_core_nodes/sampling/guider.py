"""From CONDITIONING to denoised predictions: ComfyUI's guidance pipeline.

Before sampling, every conditioning entry is resolved once (``process_conds``):
percentage areas become latent areas, masks are resized to the latent, step
ranges become sigma ranges, and the model turns each entry's options into
network inputs (``BaseModel.extra_conds``). At every evaluation
``calc_cond_batch`` runs all active entries of the positive and negative sides,
batching together the entries whose inputs can share a batch (negative first,
as ComfyUI does), and blends overlapping areas weighted by strength x mask.
``sampling_function`` then applies classifier-free guidance and the model's
cfg / pre-cfg / post-cfg functions. :class:`CFGGuider` drives a sampler over
all of that, with the wrappers packs attach at each stage.

These names, signatures and argument dicts are the ones ComfyUI's node packs
call and receive, so they are kept exactly.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from contextlib import ExitStack
from typing import Any, NamedTuple

import torch

from ..model import extension
from ..model.conds import repeat_to_batch_size
from ..model.nested import NestedTensor, is_nested, pack_latents, unpack_latents
from ..model.patcher import create_model_options_clone
from . import hooks as hook_handling

# --- conditioning preparation ------------------------------------------------------------------


def convert_cond(cond: list[list[Any]]) -> list[dict[str, Any]]:
    """CONDITIONING ``[[tensor, options], ...]`` -> option dicts with ``cross_attn`` and an id each."""
    out = []
    for tensor, options in cond:
        entry = dict(options)
        entry["model_conds"] = dict(entry.get("model_conds", {}))
        if tensor is not None:
            entry["cross_attn"] = tensor
        entry["uuid"] = uuid.uuid4()
        out.append(entry)
    return out


def reshape_mask(input_mask: torch.Tensor, output_shape: Any) -> torch.Tensor:
    """A mask resized to a latent's spatial shape and repeated over its channels and batch."""
    dims = len(output_shape) - 2
    if dims == 1:
        mode = "linear"
    elif dims == 2:
        input_mask = input_mask.reshape((-1, 1, input_mask.shape[-2], input_mask.shape[-1]))
        mode = "bilinear"
    else:
        if input_mask.ndim < 5:
            input_mask = input_mask.reshape((1, 1, -1, input_mask.shape[-2], input_mask.shape[-1]))
        mode = "trilinear"
    mask = torch.nn.functional.interpolate(input_mask, size=tuple(output_shape[2:]), mode=mode)
    if mask.shape[1] < output_shape[1]:
        mask = mask.repeat((1, output_shape[1]) + (1,) * dims)[:, : output_shape[1]]
    return repeat_to_batch_size(mask, output_shape[0])


def prepare_mask(noise_mask: torch.Tensor, shape: Any, device: Any) -> torch.Tensor:
    return reshape_mask(noise_mask, shape).to(device)


def get_mask_aabb(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask: the (x0, y0, x1, y1) box of its non-zero pixels, and whether it is empty."""
    boxes = torch.zeros((masks.shape[0], 4), device=masks.device, dtype=torch.int)
    empty = torch.zeros((masks.shape[0],), device=masks.device, dtype=torch.bool)
    for i, mask in enumerate(masks):
        if mask.numel() == 0:
            continue
        if not bool((mask != 0).any()):
            empty[i] = True
            continue
        y, x = torch.where(mask)
        boxes[i] = torch.stack([x.min(), y.min(), x.max(), y.max()])
    return boxes, empty


def resolve_areas_and_cond_masks_multidim(conditions: list[dict[str, Any]], dims: Any, device: Any) -> None:
    """Turn percentage areas into latent units and resize masks to the latent, once, before sampling."""
    from comfy_kernel.nodes.resize import common_upscale

    dims = tuple(dims)
    for i, c in enumerate(conditions):
        area = c.get("area")
        if area is not None and area[0] == "percentage":
            c = dict(c)
            a = area[1:]
            half = len(a) // 2
            c["area"] = tuple(max(1, round(a[d] * dims[d])) for d in range(len(dims))) + tuple(
                round(a[d + half] * dims[d]) for d in range(len(dims)))
            conditions[i] = c
        if "mask" in c:
            c = dict(c)
            mask = c["mask"].to(device=device)
            if mask.ndim == len(dims):
                mask = mask.unsqueeze(0)
            if tuple(mask.shape[1:]) != dims:
                if mask.ndim < 4:
                    mask = common_upscale(mask.unsqueeze(1), dims[-1], dims[-2], "bilinear", "none").squeeze(1)
                else:
                    mask = common_upscale(mask, dims[-1], dims[-2], "bilinear", "none")
            if c.get("set_area_to_bounds", False):
                bounds = torch.max(torch.abs(mask), dim=0).values.unsqueeze(0)
                boxes, empty = get_mask_aabb(bounds)
                if empty[0]:
                    c["area"] = (8, 8, 0, 0)
                else:
                    x0, y0, x1, y1 = (int(v) for v in boxes[0])
                    c["area"] = (max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0)
            c["mask"] = mask
            conditions[i] = c


def resolve_areas_and_cond_masks(conditions: list[dict[str, Any]], h: int, w: int, device: Any) -> None:
    resolve_areas_and_cond_masks_multidim(conditions, [h, w], device)


def add_area_dims(area: list[int], num_dims: int) -> list[int]:
    """Pad an area (sizes..., offsets...) with whole-extent leading dimensions."""
    area = list(area)
    while len(area) // 2 < num_dims:
        half = len(area) // 2
        area = [2147483648] + area[:half] + [0] + area[half:]
    return area


def _area_inside(a: Any, outer: Any) -> bool:
    a = add_area_dims(list(a), len(outer) // 2)
    outer = add_area_dims(list(outer), len(a) // 2)
    na, no = len(a) // 2, len(outer) // 2
    for i in range(min(na, no)):
        if a[na + i] < outer[no + i] or a[i] + a[na + i] > outer[i] + outer[no + i]:
            return False
    return True


def create_cond_with_same_area_if_none(conds: list[dict[str, Any]], c: dict[str, Any]) -> None:
    """Give the other side an entry covering ``c``'s area, so an area is never guided against nothing."""
    if "area" not in c:
        return
    smallest = None
    for x in conds:
        if "area" in x:
            if _area_inside(c["area"], x["area"]):
                if smallest is None or "area" not in smallest:
                    smallest = x
                elif math.prod(smallest["area"][: len(smallest["area"]) // 2]) > math.prod(
                        x["area"][: len(x["area"]) // 2]):
                    smallest = x
        elif smallest is None:
            smallest = x
    if smallest is None or smallest.get("area") == c["area"]:
        return
    out = dict(c)
    out["model_conds"] = dict(smallest["model_conds"])
    conds.append(out)


def calculate_start_end_timesteps(model: Any, conds: list[dict[str, Any]]) -> None:
    """``start_percent`` / ``end_percent`` -> the sigma range in which an entry is active."""
    s = model.model_sampling
    for i, x in enumerate(conds):
        start = end = None
        if "clip_start_percent" in x:
            start = s.percent_to_sigma(max(x["clip_start_percent"], x.get("start_percent", 0.0)))
            end = s.percent_to_sigma(min(x["clip_end_percent"], x.get("end_percent", 1.0)))
        else:
            if "start_percent" in x:
                start = s.percent_to_sigma(x["start_percent"])
            if "end_percent" in x:
                end = s.percent_to_sigma(x["end_percent"])
        if start is not None or end is not None:
            n = dict(x)
            if start is not None:
                n["timestep_start"] = start
            if end is not None:
                n["timestep_end"] = end
            conds[i] = n


def pre_run_control(model: Any, conds: list[dict[str, Any]]) -> None:
    s = model.model_sampling
    for x in conds:
        if "control" in x:
            x["control"].pre_run(model, lambda a: s.percent_to_sigma(a))


def apply_empty_x_to_equal_area(conds: list[dict[str, Any]], uncond: list[dict[str, Any]], name: str,
                                uncond_fill_func: Any) -> None:
    """Give whole-image negative entries the positive side's ControlNet/GLIGEN too (ComfyUI's rule)."""
    cond_cnets = [x[name] for x in conds if "area" not in x and x.get(name) is not None]
    uncond_other = [(x, t) for t, x in enumerate(uncond) if "area" not in x and x.get(name) is None]
    if any("area" not in x and x.get(name) is not None for x in uncond):
        return
    for i in range(len(cond_cnets)):
        entry, index = uncond_other[i % len(uncond_other)]
        n = dict(entry)
        n[name] = uncond_fill_func(cond_cnets, i)
        if entry.get(name) is not None:
            uncond.append(n)
        else:
            uncond[index] = n


def encode_model_conds(model_function: Any, conds: list[dict[str, Any]], noise: torch.Tensor, device: Any,
                       prompt_type: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Add each entry's network inputs (``model_conds``) computed by ``model.extra_conds``."""
    for i, x in enumerate(conds):
        params = dict(x)
        params["device"] = device
        params["noise"] = noise
        params["width"] = params.get("width", noise.shape[3] * 8 if noise.ndim >= 4 else None)
        params["height"] = params.get("height", noise.shape[2] * 8)
        params["prompt_type"] = params.get("prompt_type", prompt_type)
        for k, v in kwargs.items():
            params.setdefault(k, v)
        out = model_function(**params)
        x = dict(x)
        x["model_conds"] = {**x["model_conds"], **out}
        conds[i] = x
    return conds


def process_conds(model: Any, noise: torch.Tensor, conds: dict[str, list[dict[str, Any]]], device: Any,
                  latent_image: torch.Tensor | None = None, denoise_mask: torch.Tensor | None = None,
                  seed: int | None = None, latent_shapes: list | None = None) -> dict[str, list[dict[str, Any]]]:
    for k in conds:
        conds[k] = conds[k][:]
        resolve_areas_and_cond_masks_multidim(conds[k], noise.shape[2:], device)
    for k in conds:
        calculate_start_end_timesteps(model, conds[k])
    if hasattr(model, "extra_conds"):
        for k in conds:
            conds[k] = encode_model_conds(model.extra_conds, conds[k], noise, device, k,
                                          latent_image=latent_image, denoise_mask=denoise_mask, seed=seed,
                                          latent_shapes=latent_shapes)
    for k in conds:
        for c in conds[k]:
            for kk in conds:
                if k != kk:
                    create_cond_with_same_area_if_none(conds[kk], c)
    hook_handling.initialize_timesteps(model, conds)
    for k in conds:
        pre_run_control(model, conds[k])
    if "positive" in conds:
        positive = conds["positive"]
        for k in conds:
            if k != "positive":
                apply_empty_x_to_equal_area([c for c in positive if c.get("control_apply_to_uncond", False)],
                                            conds[k], "control", lambda cnets, i: cnets[i])
                apply_empty_x_to_equal_area(positive, conds[k], "gligen", lambda cnets, i: cnets[i])
    return conds


# --- one evaluation ----------------------------------------------------------------------------


class CondRun(NamedTuple):
    input_x: torch.Tensor
    mult: torch.Tensor
    conditioning: dict[str, Any]
    area: list[int] | None
    control: Any
    patches: dict[str, list[Any]] | None
    uuid: Any
    hooks: Any


def get_area_and_mult(conds: dict[str, Any], x_in: torch.Tensor, timestep_in: torch.Tensor) -> CondRun | None:
    """What one entry contributes at this step: its slice of x, its weight map and its inputs; None if inactive."""
    dims = tuple(x_in.shape[2:])
    if "timestep_start" in conds and timestep_in[0] > conds["timestep_start"]:
        return None
    if "timestep_end" in conds and timestep_in[0] < conds["timestep_end"]:
        return None
    area = None
    if "area" in conds:
        area = add_area_dims(list(conds["area"]), len(dims))
        if len(area) // 2 > len(dims):
            area = area[: len(dims)] + area[len(area) // 2: len(area) // 2 + len(dims)]
    strength = conds.get("strength", 1.0)
    input_x = x_in
    if area is not None:
        for i in range(len(dims)):
            area[i] = min(input_x.shape[i + 2] - area[len(dims) + i], area[i])
            input_x = input_x.narrow(i + 2, area[len(dims) + i], area[i])
    if "mask" in conds:
        mask = conds["mask"][: input_x.shape[0]]
        if area is not None:
            for i in range(len(dims)):
                mask = mask.narrow(i + 1, area[len(dims) + i], area[i])
        mask = mask * conds.get("mask_strength", 1.0)
        mask = mask.unsqueeze(1).repeat((input_x.shape[0] // mask.shape[0], input_x.shape[1]) + (1,) * (mask.ndim - 1))
    else:
        mask = torch.ones_like(input_x)
    mult = mask * strength
    if "mask" not in conds and area is not None:
        fuzz = 8  # a feathered edge where an area does not touch the latent's border
        for i in range(len(dims)):
            rr = min(fuzz, mult.shape[2 + i] // 4)
            if area[len(dims) + i] != 0:
                for t in range(rr):
                    mult.narrow(i + 2, t, 1).mul_((1.0 / rr) * (t + 1))
            if area[i] + area[len(dims) + i] < x_in.shape[i + 2]:
                for t in range(rr):
                    mult.narrow(i + 2, area[i] - 1 - t, 1).mul_((1.0 / rr) * (t + 1))
    conditioning = {k: v.process_cond(batch_size=x_in.shape[0], device=x_in.device, area=area)
                    for k, v in conds["model_conds"].items()}
    patches = None
    if "gligen" in conds:
        kind, gligen_model = conds["gligen"][0], conds["gligen"][1]
        if kind == "position":
            patch = gligen_model.model.set_position(input_x.shape, conds["gligen"][2], input_x.device)
        else:
            patch = gligen_model.model.set_empty(input_x.shape, input_x.device)
        patches = {"middle_patch": [patch]}
    return CondRun(input_x, mult, conditioning, area, conds.get("control"), patches, conds["uuid"],
                   conds.get("hooks"))


def cond_equal_size(c1: dict[str, Any], c2: dict[str, Any]) -> bool:
    if c1 is c2:
        return True
    if c1.keys() != c2.keys():
        return False
    return all(c1[k].can_concat(c2[k]) for k in c1)


def can_concat_cond(c1: CondRun, c2: CondRun) -> bool:
    if c1.input_x.shape != c2.input_x.shape:
        return False
    for a, b in ((c1.control, c2.control), (c1.patches, c2.patches)):
        if (a is None) != (b is None) or (a is not None and a is not b):
            return False
    return cond_equal_size(c1.conditioning, c2.conditioning)


def cond_cat(c_list: list[dict[str, Any]]) -> dict[str, Any]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for c in c_list:
        for k, v in c.items():
            grouped[k].append(v)
    return {k: v[0].concat(v[1:]) for k, v in grouped.items()}


def _free_memory(device: torch.device) -> int:
    from comfy_kernel.gpu import memory_stats

    try:
        return int(memory_stats(str(device)).free)
    except Exception:
        return 1 << 62


def calc_cond_batch(model: Any, conds: list[list[dict[str, Any]] | None], x_in: torch.Tensor,
                    timestep: torch.Tensor, model_options: dict[str, Any]) -> list[torch.Tensor]:
    """The blended denoised prediction of each side (``conds[i]``; None skips a side)."""
    handler = model_options.get("context_handler")
    if handler is not None and handler.should_use_context(model, conds, x_in, timestep, model_options):
        return handler.execute(_calc_cond_batch_outer, model, conds, x_in, timestep, model_options)
    return _calc_cond_batch_outer(model, conds, x_in, timestep, model_options)


def _calc_cond_batch_outer(model: Any, conds: Any, x_in: torch.Tensor, timestep: torch.Tensor,
                           model_options: dict[str, Any]) -> list[torch.Tensor]:
    wrappers = extension.get_all_wrappers(extension.WrappersMP.CALC_COND_BATCH, model_options,
                                          is_model_options=True)
    return extension.WrapperExecutor.new_executor(_calc_cond_batch, wrappers).execute(
        model, conds, x_in, timestep, model_options)


def _calc_cond_batch(model: Any, conds: Any, x_in: torch.Tensor, timestep: torch.Tensor,
                     model_options: dict[str, Any]) -> list[torch.Tensor]:
    out_conds = [torch.zeros_like(x_in) for _ in conds]
    out_counts = [torch.ones_like(x_in) * 1e-37 for _ in conds]
    grouped = hook_handling.group_by_hooks(model, conds, x_in, timestep, model_options, get_area_and_mult)
    patcher = getattr(model, "current_patcher", None)
    if patcher is not None:
        patcher.prepare_state(timestep)
    for hooks, to_run in grouped.items():
        with hook_handling.hooked_model(model, hooks) as run_model:
            _run_batches(run_model, hooks, to_run, x_in, timestep, model_options, out_conds, out_counts)
    for out, count in zip(out_conds, out_counts, strict=True):
        out /= count
    return out_conds


def _run_batches(model: Any, hooks: Any, to_run: list[tuple[CondRun, int]], x_in: torch.Tensor,
                 timestep: torch.Tensor, model_options: dict[str, Any], out_conds: list[torch.Tensor],
                 out_counts: list[torch.Tensor]) -> None:
    """Evaluate one hook group's entries, as few model calls as memory allows, into the sides' sums."""
    while to_run:
        first = to_run[0][0]
        candidates = [i for i, (p, _) in enumerate(to_run) if can_concat_cond(p, first)]
        candidates.reverse()
        to_batch = candidates[:1]
        free = _free_memory(x_in.device)
        for n in range(1, len(candidates) + 1):
            amount = candidates[: len(candidates) // n]
            shape = [len(amount) * first.input_x.shape[0]] + list(first.input_x.shape)[1:]
            cond_shapes: dict[str, list[Any]] = defaultdict(list)
            for idx in amount:
                for k, v in to_run[idx][0].conditioning.items():
                    cond_shapes[k].append(v.size())
            if model.memory_required(shape, cond_shapes=cond_shapes) * 1.5 < free:
                to_batch = amount
                break
        runs = [to_run.pop(idx) for idx in to_batch]
        input_x = torch.cat([p.input_x for p, _ in runs])
        c = cond_cat([p.conditioning for p, _ in runs])
        cond_or_uncond = [i for _, i in runs]
        control, patches = runs[-1][0].control, runs[-1][0].patches
        timestep_ = torch.cat([timestep] * len(runs))
        transformer_options = hook_handling.transformer_options_for(model, hooks, model_options)
        if patches is not None:
            merged = dict(transformer_options.get("patches", {}))
            for name, plist in patches.items():
                merged[name] = merged.get(name, []) + plist
            transformer_options["patches"] = merged
        transformer_options["cond_or_uncond"] = cond_or_uncond[:]
        transformer_options["uuids"] = [p.uuid for p, _ in runs]
        transformer_options["sigmas"] = timestep
        c["transformer_options"] = transformer_options
        if control is not None:
            c["control"] = control.get_control(input_x, timestep_, c, len(cond_or_uncond), transformer_options)
        if "model_function_wrapper" in model_options:
            output = model_options["model_function_wrapper"](model.apply_model, {
                "input": input_x, "timestep": timestep_, "c": c, "cond_or_uncond": cond_or_uncond})
        else:
            output = model.apply_model(input_x, timestep_, **c)
        for (p, side), out in zip(runs, output.chunk(len(runs)), strict=True):
            target, counts = out_conds[side], out_counts[side]
            if p.area is not None:
                dims = len(p.area) // 2
                for i in range(dims):
                    target = target.narrow(i + 2, p.area[i + dims], p.area[i])
                    counts = counts.narrow(i + 2, p.area[i + dims], p.area[i])
            target += out * p.mult
            counts += p.mult


def calc_cond_uncond_batch(model: Any, cond: Any, uncond: Any, x_in: torch.Tensor, timestep: torch.Tensor,
                           model_options: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    return tuple(calc_cond_batch(model, [cond, uncond], x_in, timestep, model_options))


def cfg_function(model: Any, cond_pred: torch.Tensor, uncond_pred: torch.Tensor, cond_scale: float,
                 x: torch.Tensor, timestep: torch.Tensor, model_options: dict[str, Any] | None = None,
                 cond: Any = None, uncond: Any = None) -> torch.Tensor:
    model_options = model_options or {}
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": model_options, "input_cond": cond, "input_uncond": uncond}
        result = x - model_options["sampler_cfg_function"](args)
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        result = fn({"denoised": result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                     "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": timestep,
                     "model_options": model_options, "input": x})
    return result


def sampling_function(model: Any, x: torch.Tensor, timestep: torch.Tensor, uncond: Any, cond: Any,
                      cond_scale: float, model_options: dict[str, Any] | None = None,
                      seed: int | None = None) -> torch.Tensor:
    """One guided denoised prediction (the negative is skipped at cfg 1 unless a patch needs it)."""
    model_options = model_options or {}
    skip_uncond = math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    uncond_ = None if skip_uncond else uncond
    conds = [cond, uncond_]
    if "sampler_calc_cond_batch_function" in model_options:
        out = model_options["sampler_calc_cond_batch_function"](
            {"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": model_options})
    else:
        out = calc_cond_batch(model, conds, x, timestep, model_options)
    for fn in model_options.get("sampler_pre_cfg_function", []):
        out = fn({"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": timestep, "input": x,
                  "sigma": timestep, "model": model, "model_options": model_options})
    return cfg_function(model, out[0], out[1], cond_scale, x, timestep, model_options=model_options,
                        cond=cond, uncond=uncond_)


class KSamplerX0Inpaint:
    """The model as samplers see it: inpainting keeps the unmasked region pinned to the input latent."""

    def __init__(self, model: Any, sigmas: torch.Tensor) -> None:
        self.inner_model = model
        self.sigmas = sigmas
        self.noise: torch.Tensor | None = None
        self.latent_image: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, denoise_mask: torch.Tensor | None = None,
                 model_options: dict[str, Any] | None = None, seed: int | None = None) -> torch.Tensor:
        from comfy_kernel.progress import throw_exception_if_processing_interrupted

        throw_exception_if_processing_interrupted()
        model_options = model_options if model_options is not None else {}
        if denoise_mask is not None:
            if "denoise_mask_function" in model_options:
                denoise_mask = model_options["denoise_mask_function"](
                    sigma, denoise_mask, extra_options={"model": self.inner_model, "sigmas": self.sigmas})
            latent_mask = 1.0 - denoise_mask
            x = x * denoise_mask + self.inner_model.inner_model.scale_latent_inpaint(
                x=x, sigma=sigma, noise=self.noise, latent_image=self.latent_image) * latent_mask
        out = self.inner_model(x, sigma, model_options=model_options, seed=seed)
        if denoise_mask is not None:
            out = out * denoise_mask + self.latent_image * latent_mask
        return out


# --- guiders -----------------------------------------------------------------------------------


def _controls(conds: dict[str, list[dict[str, Any]]]) -> list[Any]:
    found: list[Any] = []
    for entries in conds.values():
        for c in entries:
            control = c.get("control")
            while control is not None:
                if not any(control is f for f in found):
                    found.append(control)
                control = getattr(control, "previous_controlnet", None)
    return found


class CFGGuider:
    """Guidance over a MODEL with positive/negative conditioning (subclassed by the other guiders)."""

    def __init__(self, model_patcher: Any) -> None:
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.original_conds: dict[str, list[dict[str, Any]]] = {}
        self.cfg = 1.0

    def set_conds(self, positive: list, negative: list) -> None:
        self.inner_set_conds({"positive": positive, "negative": negative})

    def set_cfg(self, cfg: float) -> None:
        self.cfg = cfg

    def inner_set_conds(self, conds: dict[str, list]) -> None:
        for k, v in conds.items():
            self.original_conds[k] = convert_cond(v)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.outer_predict_noise(*args, **kwargs)

    def outer_predict_noise(self, x: torch.Tensor, timestep: torch.Tensor,
                            model_options: dict[str, Any] | None = None, seed: int | None = None) -> torch.Tensor:
        wrappers = extension.get_all_wrappers(extension.WrappersMP.PREDICT_NOISE, self.model_options,
                                              is_model_options=True)
        return extension.WrapperExecutor.new_class_executor(self.predict_noise, self, wrappers).execute(
            x, timestep, model_options or {}, seed)

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict[str, Any] | None = None,
                      seed: int | None = None) -> torch.Tensor:
        return sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                 self.conds.get("positive"), self.cfg, model_options=model_options, seed=seed)

    def inner_sample(self, noise: torch.Tensor, latent_image: torch.Tensor, device: Any, sampler: Any,
                     sigmas: torch.Tensor, denoise_mask: torch.Tensor | None, callback: Any, disable_pbar: bool,
                     seed: int | None, latent_shapes: list | None = None) -> torch.Tensor:
        if latent_image is not None and torch.count_nonzero(latent_image) > 0:  # an empty latent stays as is
            latent_image = self.inner_model.process_latent_in(latent_image)
        self.conds = process_conds(self.inner_model, noise, self.conds, device, latent_image, denoise_mask, seed,
                                   latent_shapes=latent_shapes)
        options = create_model_options_clone(self.model_options)
        options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
        extra_args = {"model_options": options, "seed": seed}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.SAMPLER_SAMPLE, options, is_model_options=True)
        samples = extension.WrapperExecutor.new_class_executor(sampler.sample, sampler, wrappers).execute(
            self, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        return self.inner_model.process_latent_out(samples.to(torch.float32))

    def outer_sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
                     denoise_mask: torch.Tensor | None = None, callback: Any = None, disable_pbar: bool = False,
                     seed: int | None = None, latent_shapes: list | None = None) -> torch.Tensor:
        with ExitStack() as stack:
            self.inner_model = stack.enter_context(self.model_patcher.use())
            self.inner_model.current_patcher = self.model_patcher
            for control in _controls(self.conds):
                enter = getattr(control, "sampling_context", None)
                if enter is not None:
                    stack.enter_context(enter())
            for extra in self.model_patcher.get_nested_additional_models() + \
                    self.model_patcher.model_patches_models() + hook_handling.additional_models(self.model_options):
                stack.enter_context(extra.use())
            device = self.model_patcher.load_device
            if denoise_mask is not None:
                denoise_mask = denoise_mask.to(device) if latent_shapes and len(latent_shapes) > 1 else \
                    prepare_mask(denoise_mask, noise.shape, device)
            noise = noise.to(device)
            latent_image = latent_image.to(device)
            sigmas = sigmas.to(device)
            self.model_patcher.model_patches_to(device)
            try:
                self.model_patcher.pre_run()
                output = self.inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                           disable_pbar, seed, **_parts(latent_shapes))
            finally:
                self.model_patcher.cleanup()
                for control in _controls(self.conds):
                    control.cleanup()
            del self.inner_model
            return output

    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
               denoise_mask: torch.Tensor | None = None, callback: Any = None, disable_pbar: bool = False,
               seed: int | None = None) -> torch.Tensor:
        if sigmas.shape[-1] == 0:
            return latent_image
        noise, latent_image, denoise_mask, latent_shapes = pack_nested(noise, latent_image, denoise_mask)
        if len(latent_shapes) > 1 and callback is not None:
            callback = _unpacking_callback(callback, latent_shapes)
        self.conds = {k: [dict(c) for c in v] for k, v in self.original_conds.items()}
        hook_handling.preprocess_conds_hooks(self.conds)
        original_options = self.model_options
        self.model_options = create_model_options_clone(self.model_options)
        # the wrappers and callbacks packs put on the patcher join the run's options (ComfyUI's prepare_model_patcher)
        to = self.model_options.setdefault("transformer_options", {})
        extension.merge_nested_dicts(to.setdefault("wrappers", {}), self.model_patcher.wrappers, copy_dict1=False)
        extension.merge_nested_dicts(to.setdefault("callbacks", {}), self.model_patcher.callbacks, copy_dict1=False)
        try:
            hook_handling.prepare_model_patcher(self.model_patcher, self.conds, self.model_options)
            hook_handling.filter_registered_hooks_on_conds(self.conds, self.model_options)
            wrappers = extension.get_all_wrappers(extension.WrappersMP.OUTER_SAMPLE, self.model_options,
                                                  is_model_options=True)
            output = extension.WrapperExecutor.new_class_executor(self.outer_sample, self, wrappers).execute(
                noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                **_parts(latent_shapes))
        finally:
            self.model_options = original_options
            self.model_patcher.restore_hook_patches()
        del self.conds
        if len(latent_shapes) > 1:
            output = NestedTensor(unpack_latents(output, latent_shapes))
        return output


def _parts(latent_shapes: list | None) -> dict[str, Any]:
    """``latent_shapes`` for a packed latent; nothing for a plain one, so guiders and packs that override
    ``outer_sample`` / ``inner_sample`` with the older signature keep working."""
    return {"latent_shapes": latent_shapes} if latent_shapes and len(latent_shapes) > 1 else {}


def pack_nested(noise: Any, latent_image: Any, denoise_mask: Any) -> tuple[Any, Any, Any, list]:
    """A nested latent (and its noise and mask) as one packed tensor, and the parts' shapes.

    Each part of the mask is resized to its part as a plain mask would be; a
    plain mask applies to the first part and the others are denoised fully.
    """
    if not is_nested(latent_image):
        return noise, latent_image, denoise_mask, [latent_image.shape]
    parts = latent_image.unbind()
    shapes = [p.shape for p in parts]
    latent_image = pack_latents(parts)[0]
    noise = pack_latents(noise.unbind())[0] if is_nested(noise) else noise
    if denoise_mask is not None:
        masks = list(denoise_mask.unbind()) if is_nested(denoise_mask) else [denoise_mask]
        masks = masks[: len(shapes)] + [torch.ones(s) for s in shapes[len(masks):]]
        denoise_mask = pack_latents([reshape_mask(m.float(), s) for m, s in zip(masks, shapes, strict=True)])[0]
    return noise, latent_image, denoise_mask, shapes


def _unpacking_callback(callback: Any, shapes: list) -> Any:
    """Step callbacks see the parts of a packed latent (previews, SamplerCustom's denoised output)."""
    def unpacked(step: int, x0: Any, x: Any, total: int) -> Any:
        return callback(step, NestedTensor(unpack_latents(x0, shapes)), NestedTensor(unpack_latents(x, shapes)),
                        total)

    return unpacked


def sample(model: Any, noise: torch.Tensor, positive: list, negative: list, cfg: float, device: Any, sampler: Any,
           sigmas: torch.Tensor, model_options: dict[str, Any] | None = None, latent_image: torch.Tensor | None = None,
           denoise_mask: torch.Tensor | None = None, callback: Any = None, disable_pbar: bool = False,
           seed: int | None = None) -> torch.Tensor:
    guider = CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
