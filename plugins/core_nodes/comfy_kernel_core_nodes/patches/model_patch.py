"""What the model-patch nodes register on a MODEL: the DiffSynth ControlNet and the USO style tokens.

Both list their MODEL_PATCH in ``models()``, so the sampler loads and pins
its network for the run, and get it from ``patcher.use()`` when called.
"""

from __future__ import annotations

from typing import Any

import torch

from comfy_kernel.nodes.resize import common_upscale


class DiffSynthControlPatch:
    """A ``double_block`` patch: after block i, control block i of the patch adds to the image tokens.

    The control image is VAE-encoded at the size of the latent being sampled
    (scaled with "area" and centre-cropped to it, as ComfyUI does) the first
    time a size is seen; the inpaint variant appends the keep-mask (1 - mask,
    bilinear to the latent size; all ones without a mask) as a 17th channel.
    Blocks past the patch's own count are left alone.
    """

    def __init__(self, model_patch: Any, vae: Any, image: torch.Tensor, strength: float,
                 mask: torch.Tensor | None = None) -> None:
        self.model_patch = model_patch
        self.vae = vae
        self.image = image
        self.strength = strength
        self.mask = mask
        self.cache: tuple[tuple[int, int], torch.Tensor] | None = None

    def _latent(self, image: torch.Tensor, extra: int) -> torch.Tensor:
        latent = self.vae.encode(image)
        if extra <= 0:
            return latent
        size = latent.shape[-2:]
        if self.mask is None:
            keep = torch.ones_like(latent[:, :1])
        else:
            mask = self.mask.float().reshape(self.mask.shape[0], -1, *self.mask.shape[-2:]).mean(dim=1, keepdim=True)
            keep = common_upscale(mask, size[1], size[0], "bilinear", "disabled")
            if latent.ndim == 5:
                keep = keep.unsqueeze(2)
            keep = keep.to(latent)
            if keep.shape[0] != latent.shape[0]:
                keep = keep.expand(latent.shape[0], *keep.shape[1:])
        return torch.cat([latent, keep], dim=1)

    def control_tokens(self, net: Any, height: int, width: int) -> torch.Tensor:
        """The embedded control image for a sample of ``height`` x ``width`` pixels (cached per size)."""
        if self.cache is not None and self.cache[0] == (height, width):
            return self.cache[1]
        image = self.image
        if image.shape[1:3] != (height, width):
            image = common_upscale(image.movedim(-1, 1), width, height, "area", "center").movedim(1, -1)
        with torch.no_grad():
            tokens = net.embed(self._latent(image, net.additional_in_dim))
        self.cache = ((height, width), tokens)
        return tokens

    def __call__(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        x, img, index = kwargs["x"], kwargs["img"], kwargs["block_index"]
        with self.model_patch.use() as holder:
            net = holder.loaded_module
            if index >= len(net.controlnet_blocks):
                return kwargs
            scale = self.vae.spacial_compression_encode()
            control = self.control_tokens(net, x.shape[-2] * scale, x.shape[-1] * scale)
            n = control.shape[1]
            control = control.to(device=img.device, dtype=img.dtype)
            img[:, :n] += net.control_block(img[:, :n], control, index) * self.strength
        kwargs["img"] = img
        return kwargs

    def to(self, device_or_dtype: Any) -> DiffSynthControlPatch:
        return self

    def models(self) -> list[Any]:
        return [self.model_patch]


class UsoStyleTokensPatch:
    """A ``post_input`` patch: the projector's style tokens go before Flux's text tokens (position ids 0)."""

    def __init__(self, model_patch: Any, features: torch.Tensor) -> None:
        self.model_patch = model_patch
        self.features = features

    def __call__(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        txt, txt_ids = kwargs["txt"], kwargs["txt_ids"]
        with self.model_patch.use() as holder:
            net = holder.loaded_module
            with torch.no_grad():
                style = net(self.features.to(device=txt.device, dtype=torch.float32)).to(txt.dtype)
        if style.shape[0] != txt.shape[0]:
            style = style.expand(txt.shape[0], -1, -1) if style.shape[0] == 1 else \
                style.repeat_interleave(txt.shape[0] // style.shape[0], dim=0)
        kwargs["txt"] = torch.cat([style, txt], dim=1)
        zeros = torch.zeros(txt_ids.shape[0], style.shape[1], txt_ids.shape[-1], dtype=txt_ids.dtype,
                            device=txt_ids.device)
        kwargs["txt_ids"] = torch.cat([zeros, txt_ids], dim=1)
        return kwargs

    def to(self, device_or_dtype: Any) -> UsoStyleTokensPatch:
        return self

    def models(self) -> list[Any]:
        return [self.model_patch]


class ZImageFunControlPatch:
    """Z-Image's fun ControlNet as a ``noise_refiner`` and a ``double_block`` patch (one object for both).

    The control latent is the Flux VAE's latent of the image (normalised) at
    the sampled size; files with extra inputs add the keep-mask channel and an
    inpaint latent (a grey image when there is none). The control state is
    carried from block to block within one network evaluation: the noise
    refiner's steps (2.x files) feed the control layers, and control layer k
    adds its residual after main block k * round(30 / n) (n control layers).
    """

    def __init__(self, model_patch: Any, vae: Any, image: torch.Tensor | None, strength: float,
                 inpaint_image: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        self.model_patch = model_patch
        self.vae = vae
        self.image = image
        self.inpaint_image = inpaint_image
        self.mask = mask
        self.strength = strength
        self.cache: tuple[tuple[int, int], torch.Tensor] | None = None
        self.state: tuple[int, torch.Tensor] | None = None

    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        from ..model.latent_formats import Flux

        return Flux().process_in(self.vae.encode(image))

    def control_latent(self, extra: int, height: int, width: int) -> torch.Tensor:
        """The network's input for a sample of ``height`` x ``width`` pixels (cached per size)."""
        if self.cache is not None and self.cache[0] == (height, width):
            return self.cache[1]

        def sized(image: torch.Tensor) -> torch.Tensor:
            if image.shape[1:3] == (height, width):
                return image
            return common_upscale(image.movedim(-1, 1), width, height, "area", "center").movedim(1, -1)

        reference = self.image if self.image is not None else self.inpaint_image
        control = None if self.image is None else self._encode(sized(self.image))
        if extra > 0:
            inpaint = sized(self.inpaint_image) if self.inpaint_image is not None \
                else torch.full_like(sized(reference), 0.5)
            keep = None
            if self.mask is not None:
                keep = self.mask.float().reshape(self.mask.shape[0], -1, *self.mask.shape[-2:]).mean(1, keepdim=True)
                pixels = common_upscale(keep, width, height, "bilinear", "center").movedim(1, -1).round()
                inpaint = (inpaint - 0.5) * pixels + 0.5
            inpaint_latent = self._encode(inpaint)
            if keep is None:
                keep = torch.zeros_like(inpaint_latent[:, :1])
            else:
                keep = common_upscale(keep, inpaint_latent.shape[-1], inpaint_latent.shape[-2], "nearest", "center")
            if control is None:
                control = self._encode(torch.full_like(inpaint, 0.5))
            control = torch.cat([control, keep.to(control), inpaint_latent], dim=1)
        self.cache = ((height, width), control)
        return control

    def __call__(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        x, img, img_input = kwargs["x"], kwargs["img"], kwargs["img_input"]
        rope, vec, index = kwargs["pe"], kwargs["vec"], kwargs["block_index"]
        options = kwargs.get("transformer_options", {})
        refiner = kwargs.get("block_type") == "noise_refiner"
        out = {k: v for k, v in kwargs.items() if k not in ("img", "txt")}  # the image tokens change in place
        with self.model_patch.use() as holder, torch.no_grad():
            net = holder.loaded_module
            layers = net.n_control_layers
            every = max(1, round(30 / layers))
            step, exact = index // every, index / every
            if not refiner and exact > layers - 1:
                self.state = None
                return out
            if self.state is None or self.state[0] > step or (refiner and index == 0):
                scale = self.vae.spacial_compression_encode()
                latent = self.control_latent(net.additional_in_dim, x.shape[-2] * scale, x.shape[-1] * scale)
                start = -len(net.control_noise_refiner) - 1 if refiner else -1
                self.state = (start, net.embed(latent.to(device=img.device, dtype=img.dtype), rope, vec, options))
            control = self.state[1]
            n = control.shape[1]
            if refiner:
                residual, control = net.refiner_step(index, control, img_input[:, :n], rope, vec, options)
                self.state = (self.state[0] + 1, control)
                if residual is not None:
                    img[:, :n] += residual * self.strength
                return out
            residual = None
            while self.state[0] < step and self.state[0] + 1 < layers:
                k = self.state[0] + 1
                residual, control = net.control_step(k, self.state[1], img_input[:, :n], rope, vec, options)
                self.state = (k, control)
            if exact == self.state[0] and residual is not None:
                img[:, :n] += residual * self.strength
                if self.state[0] + 1 == layers:
                    self.state = None
        return out

    def to(self, device_or_dtype: Any) -> ZImageFunControlPatch:
        self.state = None
        return self

    def models(self) -> list[Any]:
        return [self.model_patch]
