"""CONTROL_NET: ControlNets, Control-LoRAs and T2I-Adapters in ComfyUI's ``comfy.controlnet`` shapes.

A CONTROL_NET carries a network (weights in the kernel's model manager) and,
once applied to conditioning (``copy().set_cond_hint(...)``), the hint image,
strength, step range and the ControlNet applied before it
(``previous_controlnet``): a chain the sampler evaluates at every step with
``get_control(x, sigma, cond, batched_number, transformer_options)``. The
result is ``{"input"|"middle"|"output": [residual or None, ...]}``, which the
UNet adds at its blocks (``apply_control``); chained ControlNets' residuals
are summed. ``pre_run`` (before sampling) turns the percent range into
sigmas, ``cleanup`` (after) drops what was computed for that run, and
``sampling_context`` pins the network in memory for the whole sampling.

Files are recognised by their key layout (:func:`load_controlnet`): the
original LDM layout (bare or under ``control_model.``, diff ControlNets that
store the difference to the UNet), the diffusers layout (including union
ControlNets), Control-LoRA, and T2I-Adapters (full, light, SDXL).
"""

from __future__ import annotations

import enum
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .auxiliary import AuxiliaryModel, base_name, file_weights, module_weights, read_nested
from .files import is_safetensors, raw_tensor_shapes, tensor_shapes
from .patcher import ModelPatcher

log = logging.getLogger(__name__)


class UnsupportedControlNet(ValueError):
    """The file holds a control model of a kind (or family) this server cannot run."""


def broadcast_image_to(tensor: torch.Tensor, target_batch_size: int, batched_number: int) -> torch.Tensor:
    """The hint batch repeated so each of the ``batched_number`` conditioning chunks gets its images."""
    current = tensor.shape[0]
    if current == 1:
        return tensor
    per_batch = target_batch_size // batched_number
    tensor = tensor[:per_batch]
    if per_batch > tensor.shape[0]:
        tensor = torch.cat([tensor] * (per_batch // tensor.shape[0]) + [tensor[:(per_batch % tensor.shape[0])]], dim=0)
    if tensor.shape[0] == target_batch_size:
        return tensor
    return torch.cat([tensor] * batched_number, dim=0)


def _convert_tensor(value: torch.Tensor, dtype: torch.dtype, device: Any) -> torch.Tensor:
    if value.is_floating_point():
        return value.to(device=device, dtype=dtype)
    return value.to(device=device)


class StrengthType(enum.Enum):
    CONSTANT = 1
    LINEAR_UP = 2


class ControlBase:
    """What every control model shares: the hint, strength, step range, chaining and residual merging."""

    def __init__(self) -> None:
        self.cond_hint_original: torch.Tensor | None = None
        self.cond_hint: torch.Tensor | None = None
        self.strength = 1.0
        self.timestep_percent_range = (0.0, 1.0)
        self.latent_format: Any = None
        self.vae: Any = None
        self.global_average_pooling = False
        self.timestep_range: tuple[float, float] | None = None
        self.compression_ratio = 8
        self.upscale_algorithm = "nearest-exact"
        self.extra_args: dict[str, Any] = {}
        self.previous_controlnet: ControlBase | None = None
        self.extra_conds: list[str] = []
        self.strength_type = StrengthType.CONSTANT
        self.concat_mask = False
        self.extra_concat_orig: list[torch.Tensor] = []
        self.extra_concat: Any = None
        self.extra_hooks: Any = None
        self.preprocess_image: Callable[[torch.Tensor], torch.Tensor] = lambda a: a

    def set_cond_hint(self, cond_hint: torch.Tensor, strength: float = 1.0,
                      timestep_percent_range: tuple[float, float] = (0.0, 1.0), vae: Any = None,
                      extra_concat: list | None = None) -> ControlBase:
        self.cond_hint_original = cond_hint
        self.strength = strength
        self.timestep_percent_range = timestep_percent_range
        if self.latent_format is not None:
            if vae is None:
                log.warning("WARNING: no VAE provided to the controlnet apply node when this controlnet requires one.")
            self.vae = vae
        self.extra_concat_orig = list(extra_concat or [])
        if self.concat_mask and len(self.extra_concat_orig) == 0:
            self.extra_concat_orig.append(torch.tensor([[[[1.0]]]]))
        return self

    def pre_run(self, model: Any, percent_to_timestep_function: Callable[[float], float]) -> None:
        self.timestep_range = (percent_to_timestep_function(self.timestep_percent_range[0]),
                               percent_to_timestep_function(self.timestep_percent_range[1]))
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model, percent_to_timestep_function)

    def set_previous_controlnet(self, controlnet: ControlBase | None) -> ControlBase:
        self.previous_controlnet = controlnet
        return self

    def cleanup(self) -> None:
        if self.previous_controlnet is not None:
            self.previous_controlnet.cleanup()
        self.cond_hint = None
        self.extra_concat = None
        self.timestep_range = None

    def get_models(self) -> list[ModelPatcher]:
        return self.previous_controlnet.get_models() if self.previous_controlnet is not None else []

    def get_extra_hooks(self) -> list[Any]:
        out = [self.extra_hooks] if self.extra_hooks is not None else []
        if self.previous_controlnet is not None:
            out += self.previous_controlnet.get_extra_hooks()
        return out

    @contextmanager
    def sampling_context(self) -> Iterator[None]:
        """Keep this control model's weights loaded and pinned while a sampler runs (the guider enters it)."""
        yield

    def copy_to(self, c: ControlBase) -> None:
        c.cond_hint_original = self.cond_hint_original
        c.strength = self.strength
        c.timestep_percent_range = self.timestep_percent_range
        c.global_average_pooling = self.global_average_pooling
        c.compression_ratio = self.compression_ratio
        c.upscale_algorithm = self.upscale_algorithm
        c.latent_format = self.latent_format
        c.extra_args = self.extra_args.copy()
        c.vae = self.vae
        c.extra_conds = self.extra_conds.copy()
        c.strength_type = self.strength_type
        c.concat_mask = self.concat_mask
        c.extra_concat_orig = self.extra_concat_orig.copy()
        c.extra_hooks = self.extra_hooks.clone() if self.extra_hooks else None
        c.preprocess_image = self.preprocess_image

    def inference_memory_requirements(self, dtype: torch.dtype) -> int:
        if self.previous_controlnet is not None:
            return self.previous_controlnet.inference_memory_requirements(dtype)
        return 0

    def _out_of_range(self, t: torch.Tensor) -> bool:
        return self.timestep_range is not None and bool(t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1])

    def control_merge(self, control: dict[str, list], control_prev: dict[str, list] | None,
                      output_dtype: torch.dtype | None) -> dict[str, list]:
        """This model's residuals times the strength, summed with the previous ControlNet's."""
        out: dict[str, list] = {"input": [], "middle": [], "output": []}
        for key, outputs in control.items():
            applied: list[torch.Tensor] = []
            for i, x in enumerate(outputs):
                if x is not None:
                    if self.global_average_pooling:
                        x = torch.mean(x, dim=(2, 3), keepdim=True).repeat(1, 1, x.shape[2], x.shape[3])
                    if not any(x is a for a in applied):  # a tensor shared between positions is scaled once
                        applied.append(x)
                        if self.strength_type == StrengthType.CONSTANT:
                            x *= self.strength
                        elif self.strength_type == StrengthType.LINEAR_UP:
                            x *= self.strength ** float(len(outputs) - i)
                    if output_dtype is not None and x.dtype != output_dtype:
                        x = x.to(output_dtype)
                out[key].append(x)
        if control_prev is not None:
            for key in ("input", "middle", "output"):
                o = out[key]
                for i, prev in enumerate(control_prev[key]):
                    if i >= len(o):
                        o.append(prev)
                    elif prev is not None:
                        o[i] = prev if o[i] is None else prev + o[i]
        return out

    def set_extra_arg(self, argument: str, value: Any = None) -> None:
        self.extra_args[argument] = value

    def _previous_control(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, Any], batched_number: int,
                          transformer_options: dict[str, Any]) -> dict[str, list] | None:
        if self.previous_controlnet is None:
            return None
        return self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)


class _PinnedNetwork:
    """The network of a control model: its patcher, and the loaded module while sampling pins it."""

    def __init__(self, patcher: ModelPatcher) -> None:
        self.patcher = patcher
        self.bound: torch.nn.Module | None = None
        self.pins = 0

    @contextmanager
    def pinned(self) -> Iterator[None]:
        with self.patcher.use() as holder:
            previous = self.bound
            self.bound = holder.loaded_module
            self.pins += 1
            try:
                yield
            finally:
                self.pins -= 1
                self.bound = previous

    def module(self) -> torch.nn.Module:
        return self.bound if self.bound is not None else self.patcher.model.loaded_module


def _as_patcher(control_model: Any, kind: str) -> ModelPatcher | None:
    if control_model is None or isinstance(control_model, ModelPatcher):
        return control_model
    if isinstance(control_model, torch.nn.Module):
        return ModelPatcher(AuxiliaryModel(module_weights(control_model, kind)))
    return ModelPatcher(control_model)


class ControlNet(ControlBase):
    """A ControlNet network applied with a hint (the networks of :mod:`..families.sd.controlnet`)."""

    def __init__(self, control_model: Any = None, global_average_pooling: bool = False, compression_ratio: int = 8,
                 latent_format: Any = None, load_device: Any = None, manual_cast_dtype: torch.dtype | None = None,
                 extra_conds: list[str] | None = None, strength_type: StrengthType = StrengthType.CONSTANT,
                 concat_mask: bool = False, preprocess_image: Callable[[torch.Tensor], torch.Tensor] = lambda a: a,
                 ) -> None:
        super().__init__()
        patcher = _as_patcher(control_model, "controlnet")
        self.control_model_wrapped = patcher
        self.load_device = load_device if load_device is not None else (patcher.load_device if patcher else None)
        self.compression_ratio = compression_ratio
        self.global_average_pooling = global_average_pooling
        self.model_sampling_current: Any = None
        self.manual_cast_dtype = manual_cast_dtype
        self.latent_format = latent_format
        self.extra_conds += ["y"] if extra_conds is None else extra_conds
        self.strength_type = strength_type
        self.concat_mask = concat_mask
        self.preprocess_image = preprocess_image

    @property
    def control_model_wrapped(self) -> ModelPatcher | None:
        """The network's ModelPatcher; assigning one makes it the network that runs."""
        return self._wrapped

    @control_model_wrapped.setter
    def control_model_wrapped(self, patcher: ModelPatcher | None) -> None:
        self._wrapped = patcher
        self._network = _PinnedNetwork(patcher) if patcher is not None else None

    @property
    def control_model(self) -> torch.nn.Module:
        """The network (loaded on first use; the pinned one while sampling)."""
        return self._network.module()

    @control_model.setter
    def control_model(self, value: torch.nn.Module | None) -> None:
        # Subclasses written for ComfyUI (Advanced-ControlNet's copies) assign the network they were built with.
        if value is None:
            self.control_model_wrapped = None
        elif self._network is None or value is not self._network.module():
            self.control_model_wrapped = _as_patcher(value, "controlnet")

    @contextmanager
    def sampling_context(self) -> Iterator[None]:
        if self._network is None:
            yield
            return
        with self._network.pinned():
            yield

    def _prepare_hint(self, x_noisy: torch.Tensor, dtype: torch.dtype) -> None:
        from comfy_kernel.nodes.resize import common_upscale

        from .conds import repeat_to_batch_size

        ratio = self.compression_ratio
        if self.vae is not None:
            ratio *= self.vae.spacial_compression_encode()
        elif self.latent_format is not None:
            raise ValueError("This Controlnet needs a VAE but none was provided, please use a ControlNetApply node "
                             "with a VAE input and connect it.")
        hint = common_upscale(self.cond_hint_original, x_noisy.shape[-1] * ratio, x_noisy.shape[-2] * ratio,
                              self.upscale_algorithm, "center")
        hint = self.preprocess_image(hint)
        if self.vae is not None:
            hint = self.vae.encode(hint.movedim(1, -1))
        if self.latent_format is not None:
            hint = self.latent_format.process_in(hint)
        if len(self.extra_concat_orig) > 0:
            to_concat = []
            for c in self.extra_concat_orig:
                c = common_upscale(c.to(hint.device), hint.shape[-1], hint.shape[-2], self.upscale_algorithm, "center")
                if c.ndim < hint.ndim:
                    c = repeat_to_batch_size(c.unsqueeze(2), hint.shape[2], dim=2)
                to_concat.append(repeat_to_batch_size(c, hint.shape[0]))
            hint = torch.cat([hint] + to_concat, dim=1)
        self.cond_hint = hint.to(device=x_noisy.device, dtype=dtype)

    def get_control(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, Any], batched_number: int,
                    transformer_options: dict[str, Any] | None = None) -> dict[str, list] | None:
        control_prev = self._previous_control(x_noisy, t, cond, batched_number, transformer_options or {})
        if self._out_of_range(t):
            return control_prev
        model = self.control_model
        dtype = self.manual_cast_dtype or model.dtype
        if self.cond_hint is None or x_noisy.shape[2] * self.compression_ratio != self.cond_hint.shape[2] \
                or x_noisy.shape[3] * self.compression_ratio != self.cond_hint.shape[3]:
            self.cond_hint = None
            self._prepare_hint(x_noisy, dtype)
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        extra = self.extra_args.copy()
        for name in self.extra_conds:
            value = cond.get(name)
            if value is not None:
                extra[name] = _convert_tensor(value, dtype, x_noisy.device)
        timestep = self.model_sampling_current.timestep(t)
        x_in = self.model_sampling_current.calculate_input(t, x_noisy)
        control = model(x=x_in.to(dtype), hint=self.cond_hint, timesteps=timestep.to(dtype),
                        context=context.to(device=x_noisy.device, dtype=dtype), **extra)
        return self.control_merge(control, control_prev, output_dtype=None)

    def copy(self) -> ControlNet:
        c = ControlNet(None, global_average_pooling=self.global_average_pooling, load_device=self.load_device,
                       manual_cast_dtype=self.manual_cast_dtype)
        c.control_model_wrapped = self.control_model_wrapped
        c._network = self._network
        self.copy_to(c)
        return c

    def get_models(self) -> list[ModelPatcher]:
        out = super().get_models()
        if self.control_model_wrapped is not None:
            out.append(self.control_model_wrapped)
        return out

    def pre_run(self, model: Any, percent_to_timestep_function: Callable[[float], float]) -> None:
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = model.model_sampling

    def cleanup(self) -> None:
        self.model_sampling_current = None
        super().cleanup()


class ControlLora(ControlNet):
    """A Control-LoRA: the ControlNet is the sampled UNet's encoder plus low-rank deltas and its own layers.

    The network is assembled in ``pre_run`` from the MODEL being sampled (its
    loaded, patched weights are shared, not copied) and dropped in ``cleanup``.
    """

    def __init__(self, control_weights: dict[str, torch.Tensor], global_average_pooling: bool = False,
                 model_options: dict[str, Any] | None = None) -> None:
        ControlBase.__init__(self)
        self.control_weights = control_weights
        self.global_average_pooling = global_average_pooling
        self.extra_conds += ["y"]
        self.control_model_wrapped = None
        self._network = None
        self._built: torch.nn.Module | None = None
        self.manual_cast_dtype = None
        self.model_sampling_current = None
        self.load_device = None

    @property
    def control_model(self) -> torch.nn.Module:
        if self._built is None:
            raise RuntimeError("a Control-LoRA is built from the sampled model; it runs only while sampling")
        return self._built

    @control_model.setter
    def control_model(self, value: torch.nn.Module | None) -> None:
        self._built = value

    def pre_run(self, model: Any, percent_to_timestep_function: Callable[[float], float]) -> None:
        super().pre_run(model, percent_to_timestep_function)
        from ..families.sd.controlnet import ControlNetModel
        from ..families.sd.models import unet_layout
        from . import ops

        unet = model.diffusion_model
        config = dict(model.unet_config if hasattr(model, "unet_config") else model.model_config.unet_config)
        hint_channels = self.control_weights["input_hint_block.0.weight"].shape[1]
        base = unet.state_dict()
        dtype = next(iter(base.values())).dtype
        compute = model.computation_dtype()
        operations = ops.pick_operations(dtype, compute)
        with torch.device("meta"):
            net = ControlNetModel(unet_layout(config), hint_channels, operations,
                                  compute if operations.cast else None)
        device = next(iter(base.values())).device
        sd = {}
        wanted = set(net.state_dict())
        for key in wanted:
            if key in base:
                sd[key] = base[key]
        for key, tensor in self.control_weights.items():
            if key != "lora_controlnet" and key.endswith((".weight", ".bias")) and "__" not in key:
                sd[key] = tensor.to(device=device, dtype=dtype)
        for key, tensor in self.control_weights.items():
            if key.endswith(".up") and "__" not in key:
                name = key[:-len(".up")]
                down = self.control_weights.get(name + ".down")
                weight = sd.get(name + ".weight")
                if down is None or weight is None:
                    continue
                delta = torch.mm(tensor.to(device=device, dtype=dtype).flatten(start_dim=1),
                                 down.to(device=device, dtype=dtype).flatten(start_dim=1)).reshape(weight.shape)
                sd[name + ".weight"] = weight + delta
        missing, _ = net.load_state_dict(sd, strict=False, assign=True)
        if missing:
            raise ValueError(f"Control-LoRA: the model lacks {len(missing)} weights it needs, e.g. {missing[:3]}")
        self._built = net.eval().requires_grad_(False)
        if operations.cast:
            ops.set_compute_dtype(self._built, compute)
            self.manual_cast_dtype = compute

    def copy(self) -> ControlLora:
        c = ControlLora(self.control_weights, global_average_pooling=self.global_average_pooling)
        self.copy_to(c)
        return c

    def cleanup(self) -> None:
        self._built = None
        super().cleanup()

    def get_models(self) -> list[ModelPatcher]:
        return ControlBase.get_models(self)

    def inference_memory_requirements(self, dtype: torch.dtype) -> int:
        params = sum(t.numel() for t in self.control_weights.values())
        return params * torch.tensor([], dtype=dtype).element_size() + ControlBase.inference_memory_requirements(
            self, dtype)


class ControlNetSD35(ControlNet):
    """A Stability SD3.5 ControlNet: it borrows embedder weights from the MMDiT being sampled (``pre_run``)."""

    def pre_run(self, model: Any, percent_to_timestep_function: Callable[[float], float]) -> None:
        from ..families.sd3.controlnet import borrowed_embedders

        double = self.control_model.params.double_y_emb
        self.extra_args = {**self.extra_args, "embedder": borrowed_embedders(model.diffusion_model, double)}
        super().pre_run(model, percent_to_timestep_function)

    def cleanup(self) -> None:
        self.extra_args.pop("embedder", None)
        super().cleanup()

    def copy(self) -> ControlNetSD35:
        c = ControlNetSD35(None, global_average_pooling=self.global_average_pooling, load_device=self.load_device,
                           manual_cast_dtype=self.manual_cast_dtype)
        c.control_model_wrapped = self.control_model_wrapped
        c._network = self._network
        self.copy_to(c)
        return c


class T2IAdapter(ControlBase):
    """A T2I-Adapter: its features are computed once per hint and added at every step in range."""

    def __init__(self, t2i_model: Any, channels_in: int, compression_ratio: int, upscale_algorithm: str,
                 device: Any = None, unshuffle_amount: int | None = None) -> None:
        super().__init__()
        patcher = _as_patcher(t2i_model, "t2i_adapter")
        self.t2i_model_wrapped = patcher
        self._network = _PinnedNetwork(patcher)
        self.channels_in = channels_in
        self.control_input: dict[str, list] | None = None
        self.compression_ratio = compression_ratio
        self.upscale_algorithm = upscale_algorithm
        self.unshuffle_amount = unshuffle_amount
        self.device = device if device is not None else patcher.load_device

    @property
    def t2i_model(self) -> torch.nn.Module:
        return self._network.module()

    @contextmanager
    def sampling_context(self) -> Iterator[None]:
        with self._network.pinned():
            yield

    def scale_image_to(self, width: int, height: int) -> tuple[int, int]:
        amount = self.unshuffle_amount or self.t2i_model.unshuffle_amount
        return math.ceil(width / amount) * amount, math.ceil(height / amount) * amount

    def get_control(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, Any], batched_number: int,
                    transformer_options: dict[str, Any] | None = None) -> dict[str, list] | None:
        from comfy_kernel.nodes.resize import common_upscale

        control_prev = self._previous_control(x_noisy, t, cond, batched_number, transformer_options or {})
        if self._out_of_range(t):
            return control_prev
        if self.cond_hint is None or x_noisy.shape[2] * self.compression_ratio != self.cond_hint.shape[2] \
                or x_noisy.shape[3] * self.compression_ratio != self.cond_hint.shape[3]:
            self.control_input = None
            self.cond_hint = None
            width, height = self.scale_image_to(x_noisy.shape[3] * self.compression_ratio,
                                                x_noisy.shape[2] * self.compression_ratio)
            hint = common_upscale(self.cond_hint_original, width, height, self.upscale_algorithm, "center").float()
            hint = hint.to(x_noisy.device)
            if self.channels_in == 1 and hint.shape[1] > 1:
                hint = torch.mean(hint, 1, keepdim=True)
            self.cond_hint = hint
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        if self.control_input is None:
            self.control_input = self.t2i_model(self.cond_hint.to(x_noisy.dtype))
        control_input = {k: [None if a is None else a.clone() for a in v] for k, v in self.control_input.items()}
        return self.control_merge(control_input, control_prev, x_noisy.dtype)

    def copy(self) -> T2IAdapter:
        c = T2IAdapter(self.t2i_model_wrapped, self.channels_in, self.compression_ratio, self.upscale_algorithm,
                       self.device, self.unshuffle_amount)
        c._network = self._network
        self.copy_to(c)
        return c

    def get_models(self) -> list[ModelPatcher]:
        return super().get_models() + [self.t2i_model_wrapped]

    def cleanup(self) -> None:
        self.control_input = None
        super().cleanup()


# --- loading -----------------------------------------------------------------------------------

_UNSUPPORTED = (
    ("after_proj_list.18.bias", "a Hunyuan-DiT ControlNet"),
    ("double_blocks.0.img_attn.norm.key_norm.scale", "a Flux (XLabs) ControlNet"),
    ("controlnet_blocks.0.linear.weight", "a Flux (Mistoline) ControlNet"),
    ("controlnet_x_embedder.weight", "a Flux (InstantX) ControlNet"),
    ("controlnet_blocks.0.weight", "a DiT ControlNet"),
    ("backbone.0.0.weight", "a Stable Cascade ControlNet"),
    ("backbone.10.blocks.0.weight", "a Stable Cascade ControlNet"),
)


def _shapes(path: str) -> tuple[dict[str, tuple[int, ...]], str | None]:
    """Key -> shape of the file's tensors, and the nested dict they live in (old T2I ``.pth`` files)."""
    shapes = tensor_shapes(path)
    if not shapes and not is_safetensors(path):
        nested = read_nested(path, "adapter")
        if nested:
            return {k: tuple(v.shape) for k, v in nested.items()}, "adapter"
    return shapes, None


def _unet_dtypes() -> tuple[Callable[[], torch.dtype], Callable[[], torch.dtype]]:
    from .devices import compute_dtype, storage_dtype

    return (lambda: storage_dtype("unet")), (lambda: compute_dtype("unet"))


def _controlnet_builder(layout: Any, hint_channels: int, union_types: int | None,
                        dtype: Callable[[], torch.dtype], compute: Callable[[], torch.dtype]) -> Callable:
    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        from ..families.sd.controlnet import ControlNetModel
        from . import ops
        from .files import load_module

        operations = ops.pick_operations(dtype(), compute())
        with torch.device("meta"):
            net = ControlNetModel(layout, hint_channels, operations, compute() if operations.cast else None,
                                  union_types)
        net = load_module(net, sd, "ControlNet")
        return ops.set_compute_dtype(net, compute()) if operations.cast else net

    return build


def _layout_and_heads(config: dict[str, Any], shapes: dict[str, tuple[int, ...]], prefix: str) -> Any:
    """The UNetConfig of a ControlNet layout, with the head count of the model family it matches."""
    from ..families.sd.models import unet_layout
    from . import detection

    detection.load_families()
    config = dict(config)
    for cls in detection.MODEL_CONFIGS:
        if cls.architecture == "unet" and cls.matches(config):
            config.update(cls.unet_extra_config)
            break
    else:
        config.update({"num_heads": -1, "num_head_channels": 64})
    return unet_layout(config), config


def _meta_keys(layout: Any, hint_channels: int, union_types: int | None) -> set[str]:
    from ..families.sd.controlnet import ControlNetModel

    with torch.device("meta"):
        return set(ControlNetModel(layout, hint_channels, union_types=union_types).state_dict())


def _ldm_controlnet(path: str, shapes: dict, prefix: str, model: Any, model_options: dict[str, Any]) -> ControlNet:
    from ..families.sd.controlnet import ldm_layout

    raw = ldm_layout(shapes, prefix)
    if raw is None:
        raise UnsupportedControlNet(f"{base_name(path)}: the ControlNet's layout could not be read")
    layout, config = _layout_and_heads(raw, shapes, prefix)
    hint_channels = shapes[prefix + "input_hint_block.0.weight"][1]
    dtype, compute = _unet_dtypes()
    wanted = _meta_keys(layout, hint_channels, None)
    convert = None
    tag = ""
    if "difference" in shapes:
        if model is None:
            log.warning("WARNING: Loaded a diff controlnet without a model. It will very likely not work.")
        else:
            convert = _add_model_weights(model)
            tag = f"+diff:{model.weights_key()}"
    keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix))
    _report_keys(path, keys, wanted)
    weights = file_weights(path, prefix, "controlnet", _controlnet_builder(layout, hint_channels, None, dtype, compute),
                           dtype, frozenset(keys & wanted), rename=lambda k: k if k in wanted else None,
                           convert=convert, tag=tag)
    return ControlNet(AuxiliaryModel(weights), global_average_pooling=model_options.get("global_average_pooling", False))


def _add_model_weights(model: Any) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A diff ControlNet stores its difference to the UNet: add the (patched) UNet's weights on read."""

    def convert(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        base = model.model_state_dict()
        for key, tensor in sd.items():
            other = base.get("diffusion_model." + key)
            if other is not None:
                sd[key] = tensor + other.to(device=tensor.device, dtype=tensor.dtype)
        return sd

    return convert


def _report_keys(path: str, present: frozenset[str] | set[str], wanted: set[str]) -> None:
    missing = sorted(wanted - set(present))
    if missing:
        raise UnsupportedControlNet(f"{base_name(path)}: {len(missing)} ControlNet weights missing, "
                                    f"e.g. {missing[:3]}")
    unexpected = sorted(set(present) - wanted)
    if unexpected:
        log.debug("unexpected controlnet keys: %s", unexpected[:10])


def _diffusers_controlnet(path: str, shapes: dict, model_options: dict[str, Any]) -> ControlNet:
    from ..families.sd.controlnet import diffusers_layout, diffusers_to_ldm, union_rename

    raw = diffusers_layout(shapes)
    if raw is None:
        raise UnsupportedControlNet(f"{base_name(path)}: the diffusers ControlNet's layout could not be read")
    layout, config = _layout_and_heads(raw, shapes, "")
    union_types = shapes["task_embedding"][0] if "control_add_embedding.linear_1.bias" in shapes else None
    hint_channels = shapes["controlnet_cond_embedding.conv_in.weight"][1]
    wanted = _meta_keys(layout, hint_channels, union_types)
    names = diffusers_to_ldm(config, shapes, wanted)
    if union_types is not None:
        for key in shapes:
            if key not in names:
                names[key] = union_rename(key)

    def rename(key: str) -> str | None:
        new = names.get(key)
        return new if new in wanted else None

    present = {names[k] for k in shapes if k in names}
    leftover = sorted(k for k in shapes if k not in names)
    if leftover:
        log.warning("leftover keys: %s", leftover[:10])
    _report_keys(path, present, wanted)
    dtype, compute = _unet_dtypes()
    weights = file_weights(path, "", "controlnet", _controlnet_builder(layout, hint_channels, union_types, dtype,
                                                                      compute),
                           dtype, frozenset(present & wanted), rename=rename)
    return ControlNet(AuxiliaryModel(weights), global_average_pooling=model_options.get("global_average_pooling", False))


def _sd35_controlnet(path: str, shapes: dict) -> ControlNetSD35:
    """Stability's SD3.5 ControlNet format; its ``control_type`` (1 canny, 2 depth) sets the hint's mapping."""
    from ..families.sd3.controlnet import SD35ControlNet, rename_key, sd35_control_params
    from . import latent_formats, ops
    from .files import load_module, read_tensor

    params = sd35_control_params(shapes)
    with torch.device("meta"):
        wanted = set(SD35ControlNet(params).state_dict())
    present = {rename_key(k) for k in shapes}
    _report_keys(path, present, wanted)
    control_type = -1
    if "control_type" in shapes:
        control_type = round(read_tensor(path, "control_type").item())
    dtype, compute = _unet_dtypes()

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        operations = ops.pick_operations(dtype(), compute())
        with torch.device("meta"):
            net = SD35ControlNet(params, operations, compute() if operations.cast else None)
        net = load_module(net, sd, "SD3.5 ControlNet")
        return ops.set_compute_dtype(net, compute()) if operations.cast else net

    def rename(key: str) -> str | None:
        new = rename_key(key)
        return new if new in wanted else None

    weights = file_weights(path, "", "controlnet", build, dtype, frozenset(wanted), rename=rename)
    preprocess = {1: lambda a: a * 255 * 0.5 + 0.5, 2: lambda a: 1.0 - a}.get(control_type, lambda a: a)
    return ControlNetSD35(AuxiliaryModel(weights), compression_ratio=1, latent_format=latent_formats.SD3(),
                          preprocess_image=preprocess)


def _sd3_diffusers_controlnet(path: str, raw: dict[str, tuple[int, ...]]) -> ControlNet:
    """diffusers' SD3ControlNetModel files; the hint is the SD3 latent without its shift (as ComfyUI runs them),
    17 hint channels the inpainting kind (mask concatenated)."""
    from comfy_kernel.gpu.loading import load_state_dict

    from ..families.sd3.controlnet import MMDiTControlNet, diffusers_controlnet_converter
    from ..families.sd3.mmdit import MMDiTParams
    from . import latent_formats, ops
    from .base import WeightsSource
    from .detection import count
    from .files import file_identity, load_module

    proj = raw["pos_embed.proj.weight"]
    table = raw.get("pos_embed.pos_embed")
    y = raw.get("time_text_embed.text_embedder.linear_1.weight")
    params = MMDiTParams(in_channels=proj[1], out_channels=proj[1], patch_size=proj[-1], depth=proj[0] // 64,
                         adm_in_channels=y[1] if y else None, context_in=raw["context_embedder.weight"][1],
                         pos_embed_max_size=math.isqrt(table[1]) if table else None,
                         qk_norm="rms" if "transformer_blocks.0.attn.norm_q.weight" in raw else None)
    blocks = count(raw, r"transformer_blocks\.(\d+)\.")
    hint_channels = raw["pos_embed_input.proj.weight"][1]
    convert = diffusers_controlnet_converter(params.depth)
    with torch.device("meta"):
        wanted = set(MMDiTControlNet(params, blocks, hint_channels).state_dict())
        present = set(convert({k: torch.empty(0, device="meta") for k in raw}))
    _report_keys(path, present, wanted)
    dtype, compute = _unet_dtypes()

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        operations = ops.pick_operations(dtype(), compute())
        with torch.device("meta"):
            net = MMDiTControlNet(params, blocks, hint_channels, operations, compute() if operations.cast else None)
        net = load_module(net, sd, "SD3 ControlNet")
        return ops.set_compute_dtype(net, compute()) if operations.cast else net

    def read(device: str) -> dict[str, torch.Tensor]:
        return {k: v for k, v in convert(load_state_dict(path, device, dtype=dtype())).items() if k in wanted}

    weights = WeightsSource(key=f"{file_identity(path)}##controlnet", read=read, build=build,
                            keys=frozenset(wanted), size=sum(math.prod(s) for s in raw.values()) * dtype().itemsize,
                            dtype=dtype)
    latent_format = latent_formats.SD3()
    latent_format.shift_factor = 0.0
    return ControlNet(AuxiliaryModel(weights), compression_ratio=1, latent_format=latent_format,
                      concat_mask=hint_channels == 17)


def _qwen_image_controlnet(path: str, shapes: dict) -> ControlNet:
    """InstantX's Qwen-Image ControlNets (diffusers names); 68 hint channels: the inpainting one (mask added)."""
    from ..families.qwen_image.controlnet import QwenImageControlNet
    from ..families.qwen_image.detect import transformer_config
    from ..families.qwen_image.models import transformer_layout
    from . import latent_formats, ops
    from .files import load_module

    raw = transformer_config(shapes)
    if raw is None:
        raise UnsupportedControlNet(f"{base_name(path)}: the Qwen-Image ControlNet's layout could not be read")
    config = transformer_layout(raw)
    hint_channels = shapes["controlnet_x_embedder.weight"][1]
    with torch.device("meta"):
        wanted = set(QwenImageControlNet(config, hint_channels).state_dict())
    _report_keys(path, set(shapes), wanted)
    dtype, compute = _unet_dtypes()

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        operations = ops.pick_operations(dtype(), compute())
        with torch.device("meta"):
            net = QwenImageControlNet(config, hint_channels, operations, compute() if operations.cast else None)
        net = load_module(net, sd, "Qwen-Image ControlNet")
        return ops.set_compute_dtype(net, compute()) if operations.cast else net

    weights = file_weights(path, "", "controlnet", build, dtype, frozenset(wanted),
                           rename=lambda k: k if k in wanted else None)
    return ControlNet(AuxiliaryModel(weights), compression_ratio=1, latent_format=latent_formats.Wan21(),
                      extra_conds=[], concat_mask=hint_channels == 68)


def _t2i_adapter(path: str, shapes: dict, inner: str | None) -> T2IAdapter | None:
    from ..components.t2i_adapter import adapter_from_keys, diffusers_adapter_rename

    rename = None
    if "adapter.body.0.resnets.0.block1.weight" in shapes:
        replace = diffusers_adapter_rename()

        def rename(key: str) -> str | None:
            for old, new in replace.items():
                if key.startswith(old):
                    return new + key[len(old):]
            return key

        shapes = {rename(k): v for k, v in shapes.items()}
    with torch.device("meta"):
        net = adapter_from_keys(shapes)
    if net is None:
        return None
    wanted = set(net.state_dict())
    _report_keys(path, set(shapes), wanted)
    dtype, _ = _unet_dtypes()
    cin = shapes["body.0.in_conv.weight" if "body.0.in_conv.weight" in shapes else "conv_in.weight"][1]

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        from .files import load_module

        with torch.device("meta"):
            module = adapter_from_keys({k: tuple(v.shape) for k, v in sd.items()})
        return load_module(module, sd, "T2I-Adapter")

    weights = file_weights(path, "", "t2i_adapter", build, dtype, frozenset(wanted), rename=rename, inner=inner)
    amount = net.unshuffle_amount
    return T2IAdapter(AuxiliaryModel(weights), cin // (amount * amount), 8, "nearest-exact", unshuffle_amount=amount)


def load_controlnet(path: str, model: Any = None, model_options: dict[str, Any] | None = None) -> ControlBase:
    """ControlNetLoader / DiffControlNetLoader: the control model a file holds, told apart by its keys."""
    model_options = dict(model_options or {})
    if "global_average_pooling" not in model_options:
        stem = os.path.splitext(path)[0]
        if stem.endswith("_shuffle") or stem.endswith("_shuffle_fp16"):
            model_options["global_average_pooling"] = True
    if is_safetensors(path):
        raw = raw_tensor_shapes(path)  # diffusers' SD3 layout is renamed by tensor_shapes, ControlNet parts dropped
        if "pos_embed_input.proj.weight" in raw and "transformer_blocks.0.attn.add_q_proj.weight" in raw:
            return _sd3_diffusers_controlnet(path, raw)
    shapes, inner = _shapes(path)
    if "lora_controlnet" in shapes:
        from .files import read_state_dict

        return ControlLora(read_state_dict(path), model_options.get("global_average_pooling", False))
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        return _diffusers_controlnet(path, shapes, model_options)
    if "pos_embed_input.proj.weight" in shapes and "transformer_blocks.0.adaLN_modulation.1.bias" in shapes:
        return _sd35_controlnet(path, shapes)
    if "controlnet_x_embedder.weight" in shapes and "transformer_blocks.0.img_mlp.net.0.proj.weight" in shapes:
        return _qwen_image_controlnet(path, shapes)
    for key, what in _UNSUPPORTED:
        if key in shapes:
            raise UnsupportedControlNet(f"{base_name(path)}: {what}, whose model family is not supported")
    if "control_model.zero_convs.0.0.weight" in shapes:
        return _ldm_controlnet(path, shapes, "control_model.", model, model_options)
    if "zero_convs.0.0.weight" in shapes:
        return _ldm_controlnet(path, shapes, "", model, model_options)
    adapter = _t2i_adapter(path, shapes, inner)
    if adapter is None:
        raise UnsupportedControlNet(f"{base_name(path)}: ERROR: controlnet file is invalid and does not contain a "
                                    "valid controlnet model.")
    return adapter
