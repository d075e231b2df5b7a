"""The diffusion model behind a MODEL: ComfyUI's ``BaseModel`` shape over lazily loaded weights.

A :class:`BaseModel` knows its family's configuration, prediction type, noise
schedule (``model_sampling``) and latent format, and how to turn conditioning
into network inputs (``extra_conds``); it runs one denoising evaluation with
``apply_model``. It does not own its weights: :class:`WeightsSource` says where
they are and how to build the network from them, and the model manager loads
them when a :class:`~.patcher.ModelPatcher` is used. Inside ``patcher.use()``
the sampler gets a *bound* copy whose ``diffusion_model`` is the loaded
network with the clone's weight patches; outside, reading
``diffusion_model`` loads the unpatched network (for packs that inspect it).
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from . import compiled, extension
from . import conds as C
from . import model_sampling as ms
from .latent_formats import LatentFormat


@dataclass(frozen=True)
class WeightsSource:
    """Where a network's weights are and how to build it.

    ``read(device)`` returns the state dict (keys as the network names them,
    floats in the storage dtype ``dtype()``); ``build(state_dict)`` returns the
    network, assigning rather than copying the tensors. ``keys`` are the state
    dict's keys, known from the file header before anything loads. ``compute()``
    is the dtype the network computes in when it differs from storage (fp8).
    """

    key: str
    read: Callable[[str], dict[str, torch.Tensor]]
    build: Callable[[dict[str, torch.Tensor]], torch.nn.Module]
    keys: frozenset[str]
    size: int | None = None
    dtype: Callable[[], torch.dtype] = field(default=lambda: torch.float32)
    compute: Callable[[], torch.dtype] | None = None


class ModelType(enum.Enum):
    EPS = 1
    V_PREDICTION = 2
    V_PREDICTION_EDM = 3
    STABLE_CASCADE = 4
    EDM = 5
    FLOW = 6
    V_PREDICTION_CONTINUOUS = 7
    FLUX = 8
    IMG_TO_IMG = 9
    FLOW_COSMOS = 10


_SAMPLING: dict[ModelType, tuple[type, type]] = {
    ModelType.EPS: (ms.EPS, ms.ModelSamplingDiscrete),
    ModelType.V_PREDICTION: (ms.V_PREDICTION, ms.ModelSamplingDiscrete),
    ModelType.V_PREDICTION_EDM: (ms.V_PREDICTION, ms.ModelSamplingContinuousEDM),
    ModelType.V_PREDICTION_CONTINUOUS: (ms.V_PREDICTION, ms.ModelSamplingContinuousV),
    ModelType.FLOW: (ms.CONST, ms.ModelSamplingDiscreteFlow),
    ModelType.STABLE_CASCADE: (ms.EPS, ms.StableCascadeSampling),
    ModelType.EDM: (ms.EDM, ms.ModelSamplingContinuousEDM),
    ModelType.FLUX: (ms.CONST, ms.ModelSamplingFlux),
    ModelType.IMG_TO_IMG: (ms.IMG_TO_IMG, ms.ModelSamplingDiscrete),
}


def model_sampling(model_config: Any, model_type: ModelType) -> torch.nn.Module:
    """The model sampling object of a configuration and prediction type."""
    prediction, schedule = _SAMPLING[model_type]
    return ms.combine(schedule, prediction, model_config)


class WeightsHolder:
    """Something a :class:`~.patcher.ModelPatcher` can patch: weights by model key, bound to a loaded network.

    Model keys are ``key_prefix`` + the network's own state dict keys
    (``diffusion_model.input_blocks.0.0.weight``), the names LoRA key maps and
    model merging use. ``bind`` returns a copy running a loaded network;
    outside a binding, :attr:`loaded_module` loads the unpatched network.
    """

    key_prefix = ""
    weights: WeightsSource | None = None
    _module: torch.nn.Module | None = None

    def state_dict_keys(self) -> set[str]:
        return {self.key_prefix + k for k in self.weights.keys} if self.weights is not None else set()

    def base_state_dict(self, filter_prefix: str | None = None) -> dict[str, torch.Tensor]:
        """The unpatched weights by model key (read from the file, on the CPU)."""
        out = {self.key_prefix + k: v for k, v in self.weights.read("cpu").items()}
        return {k: v for k, v in out.items() if filter_prefix is None or k.startswith(filter_prefix)}

    @property
    def loaded_module(self) -> torch.nn.Module:
        if self._module is not None:
            return self._module
        from .patcher import ModelPatcher

        return ModelPatcher(self).patch_model()._module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {self.key_prefix + k: v for k, v in self.loaded_module.state_dict().items()}

    #: True for a deep copy that runs its own network instead of the model manager's (see ModelPatcher).
    owns_network = False

    def modules(self) -> Iterator[torch.nn.Module]:
        """The network's modules, as ``torch.nn.Module.modules`` (packs look for layers to change)."""
        return self.loaded_module.modules()

    def named_modules(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, torch.nn.Module]]:
        return self.loaded_module.named_modules(*args, **kwargs)

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return self.loaded_module.parameters(recurse)

    def bind(self, module: torch.nn.Module, object_patches: dict[str, Any] | None = None) -> Any:
        """A copy running ``module``, with the undotted ``object_patches`` set on the copy."""
        bound = copy.copy(self)
        bound._module = module
        for name, value in (object_patches or {}).items():
            if "." not in name:
                setattr(bound, name, value)
        return bound

    @contextmanager
    def bound(self, module: torch.nn.Module, object_patches: dict[str, Any]) -> Iterator[Any]:
        """:meth:`bind`, plus dotted object patches set on the network for the duration of the block."""
        bound = self.bind(module, object_patches)
        saved = []
        for name, value in object_patches.items():
            if "." in name:
                owner_path, attr = name.rsplit(".", 1)
                owner = bound
                for part in owner_path.split("."):
                    owner = getattr(owner, part)
                saved.append((owner, attr, getattr(owner, attr)))
                setattr(owner, attr, value)
        try:
            yield bound
        finally:
            for owner, attr, value in reversed(saved):
                setattr(owner, attr, value)

    def get_dtype(self) -> torch.dtype:
        module = self._module
        if module is not None:
            dtype = getattr(module, "dtype", None)
            if isinstance(dtype, torch.dtype):
                return dtype
            for p in getattr(module, "parameters", tuple)():
                return p.dtype
        return self.weights.dtype() if self.weights is not None else torch.float32


class BaseModel(WeightsHolder):
    """One family's diffusion model; families subclass it for their own conditioning inputs."""

    key_prefix = "diffusion_model."

    def __init__(self, model_config: Any, model_type: ModelType = ModelType.EPS,
                 weights: WeightsSource | None = None, device: Any = None) -> None:
        self.model_config = model_config
        self.model_type = model_type
        self.weights = weights
        unet_config = dict(getattr(model_config, "unet_config", {}) or {})
        self.unet_config = unet_config
        self.model_sampling = model_sampling(model_config, model_type)
        self.latent_format: LatentFormat = model_config.latent_format()
        self.adm_channels = unet_config.get("adm_in_channels") or 0
        self.concat_keys: tuple[str, ...] = ()
        self.memory_usage_factor = getattr(model_config, "memory_usage_factor", 2.0)
        self.manual_cast_dtype: torch.dtype | None = None
        self.memory_usage_factor_conds: tuple[str, ...] = ()
        self.inpaint_model = False

    # -- weights --------------------------------------------------------------------------------

    @property
    def diffusion_model(self) -> torch.nn.Module:
        """The network: the bound (patched, pinned) one while sampling, else the unpatched one, loaded."""
        return self.loaded_module

    @diffusion_model.setter
    def diffusion_model(self, module: torch.nn.Module) -> None:
        self._module = module

    def computation_dtype(self) -> torch.dtype:
        if self.manual_cast_dtype is not None:
            return self.manual_cast_dtype
        if self.weights is not None and self.weights.compute is not None:
            return self.weights.compute()
        return self.get_dtype()

    # -- latents --------------------------------------------------------------------------------

    def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_out(latent)

    def scale_latent_inpaint(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                             latent_image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model_sampling.noise_scaling(sigma.reshape([sigma.shape[0]] + [1] * (noise.ndim - 1)),
                                                 noise, latent_image)

    # -- one evaluation -------------------------------------------------------------------------

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, c_concat: torch.Tensor | None = None,
                    c_crossattn: torch.Tensor | None = None, control: Any = None,
                    transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        """The denoised prediction for the sampler state ``x`` at sigmas ``t``."""
        transformer_options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.APPLY_MODEL, transformer_options)
        return extension.WrapperExecutor.new_class_executor(self._apply_model, self, wrappers).execute(
            x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def _apply_model(self, x: torch.Tensor, t: torch.Tensor, c_concat: torch.Tensor | None = None,
                     c_crossattn: torch.Tensor | None = None, control: Any = None,
                     transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat.to(xc.device)], dim=1)
        dtype = self.computation_dtype()
        xc = xc.to(dtype)
        timestep = self.model_sampling.timestep(t).float()
        context = c_crossattn.to(dtype) if c_crossattn is not None else None
        extra = {}
        for name, value in kwargs.items():
            if hasattr(value, "dtype") and value.dtype not in (torch.int, torch.long):
                value = value.to(dtype)
            extra[name] = value
        timestep = self.process_timestep(timestep, x=x, **extra)
        network = compiled.network_for(self.diffusion_model, transformer_options, control, extra)
        if network is not None:
            output = network(xc, timestep, context=context, transformer_options={}, **extra).float()
        else:
            output = self.diffusion_model(xc, timestep, context=context, control=control,
                                          transformer_options=transformer_options or {}, **extra).float()
        return self.model_sampling.calculate_denoised(sigma, output, x)

    def process_timestep(self, timestep: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return timestep

    # -- conditioning -> network inputs ---------------------------------------------------------

    def encode_adm(self, **kwargs: Any) -> torch.Tensor | None:
        return None

    def concat_cond(self, **kwargs: Any) -> torch.Tensor | None:
        """The extra input channels of inpainting models: mask and masked image."""
        if not self.concat_keys:
            return None
        from comfy_kernel.nodes.resize import common_upscale

        noise = kwargs["noise"]
        device = kwargs["device"]
        mask = kwargs.get("concat_mask", kwargs.get("denoise_mask"))
        image = kwargs.get("concat_latent_image")
        if image is None:
            image = kwargs.get("latent_image")
        else:
            image = self.process_latent_in(image)
        if image is None:
            image = torch.zeros_like(noise)
        if image.shape[1:] != noise.shape[1:]:
            image = common_upscale(image, noise.shape[-1], noise.shape[-2], "bilinear", "center")
        image = resize_to_batch_size(image, noise.shape[0])
        if mask is not None:
            if mask.ndim == noise.ndim:
                mask = mask[:, :1]
            dims = noise.ndim - 2
            mask = mask.reshape((-1, 1) + tuple(mask.shape[-dims:]))
            if mask.shape[-2:] != noise.shape[-2:]:
                mask = common_upscale(mask, noise.shape[-1], noise.shape[-2], "bilinear", "center")
            mask = resize_to_batch_size(mask.round(), noise.shape[0])
        parts = []
        for key in self.concat_keys:
            if mask is not None:
                if key == "mask":
                    parts.append(mask.to(device))
                elif key == "masked_image":
                    parts.append(image.to(device))
                elif key == "mask_inverted":
                    parts.append(1.0 - mask.to(device))
            else:
                if key == "mask":
                    parts.append(torch.ones_like(noise)[:, :1])
                elif key == "masked_image":
                    parts.append(self.blank_inpaint_image_like(noise))
                elif key == "mask_inverted":
                    parts.append(torch.zeros_like(noise)[:, :1])
            if key == "concat_image":
                parts.append(image.to(device))
        return torch.cat(parts, dim=1)

    def blank_inpaint_image_like(self, latent: torch.Tensor) -> torch.Tensor:
        """The latent of a grey image (what inpainting models see where nothing is masked)."""
        blank = torch.ones_like(latent)
        blank[:, 0] *= 0.8223
        blank[:, 1] *= -0.6876
        blank[:, 2] *= 0.6364
        blank[:, 3] *= 0.1380
        return blank

    def set_inpaint(self) -> None:
        self.concat_keys = ("mask", "masked_image")
        self.inpaint_model = True

    def extra_conds(self, **kwargs: Any) -> dict[str, C.CONDRegular]:
        """Network inputs from one conditioning entry's options (``cross_attn``, ``pooled_output`` ...)."""
        out: dict[str, C.CONDRegular] = {}
        concat = self.concat_cond(**kwargs)
        if concat is not None:
            out["c_concat"] = C.CONDNoiseShape(concat)
        adm = self.encode_adm(**kwargs)
        if adm is not None:
            out["y"] = C.CONDRegular(adm)
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            out["c_crossattn"] = C.CONDCrossAttn(cross_attn)
        cross_attn_cnet = kwargs.get("cross_attn_controlnet")
        if cross_attn_cnet is not None:
            out["crossattn_controlnet"] = C.CONDCrossAttn(cross_attn_cnet)
        noise_concat = kwargs.get("noise_concat")
        if noise_concat is not None:
            out["c_concat"] = C.CONDNoiseShape(noise_concat)
        return out

    def extra_conds_shapes(self, **kwargs: Any) -> dict[str, list[int]]:
        return {}

    # -- memory ---------------------------------------------------------------------------------

    def memory_required(self, input_shape: Any, cond_shapes: dict[str, Any] | None = None) -> float:
        """Bytes of activations one evaluation of a batch of ``input_shape`` needs (an estimate)."""
        area = input_shape[0] * math.prod(input_shape[2:])
        dtype_size = torch.tensor([], dtype=self.computation_dtype()).element_size()
        return area * dtype_size * 0.01 * self.memory_usage_factor * 1024 * 1024


def resize_to_batch_size(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Pick or interpolate batch items so ``tensor`` has ``batch_size`` of them (ComfyUI's rule)."""
    in_batch = tensor.shape[0]
    if in_batch == batch_size:
        return tensor
    if batch_size <= 1:
        return tensor[:batch_size]
    output = torch.empty([batch_size] + list(tensor.shape)[1:], dtype=tensor.dtype, device=tensor.device)
    if batch_size < in_batch:
        scale = (in_batch - 1) / (batch_size - 1)
        for i in range(batch_size):
            output[i] = tensor[min(round(i * scale), in_batch - 1)]
    else:
        scale = in_batch / batch_size
        for i in range(batch_size):
            output[i] = tensor[min(math.floor((i + 0.5) * scale), in_batch - 1)]
    return output
