"""The UPSCALE_MODEL value and ImageUpscaleWithModel's tiled upscale.

An :class:`UpscaleModel` is a reference: the file plus what spandrel found in
it (architecture, scale, channels). The network itself belongs to the
kernel's model manager under the file's identity, so it is loaded once, kept
while memory allows, moved off the device under pressure and dropped by
``POST /free``; running it pins it for the call. Node packs that treat the
value as spandrel's ``ImageModelDescriptor`` (``model.scale``,
``model(image)``, ``model.model``, ``model.to(device)``) keep working.

The upscale itself follows ComfyUI: 512-pixel tiles overlapping by 32, each
tile's result blended in with a linear ramp over the (scaled) overlap, and on
out-of-memory the tile size halves, down to 128.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TILE = 512
OVERLAP = 32
MIN_TILE = 128
#: ComfyUI's working-memory estimate per upscale: 512x512x3 elements x scale x this factor.
ACTIVATION_FACTOR = 384.0
_SWINIR_PROBE = "module.layers.0.residual_group.blocks.0.norm1.weight"


def read_state_dict(path: str) -> dict[str, Any]:
    """The tensors of an upscale model file, unwrapped as ComfyUI unwraps them.

    .safetensors are read directly; .pth/.pt/.ckpt only through
    ``torch.load(weights_only=True)``, which never runs pickled code.
    """
    import torch

    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file

        sd: Any = load_file(path, device="cpu")
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict" in sd:
            sd = sd["state_dict"]
        elif len(sd) == 1 and isinstance(next(iter(sd.values())), dict):
            sd = next(iter(sd.values()))
    if _SWINIR_PROBE in sd:  # SwinIR saved from a DataParallel wrapper
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def _held_module(descriptor: Any) -> Any:
    """The descriptor's network as an ``nn.Module`` the manager can move; it keeps the descriptor."""
    import torch

    class Held(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = descriptor.model
            self.descriptor = descriptor

    return Held()


def load_descriptor(path: str, device: str = "cpu") -> Any:
    """spandrel's ``ImageModelDescriptor`` for a file, in float32 on ``device``, ready for inference."""
    from .spandrel_import import import_spandrel

    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(read_state_dict(path))
    except spandrel.UnsupportedModelError:
        raise ValueError(f"{os.path.basename(path)} is not an upscale model architecture spandrel knows") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ValueError("Upscale model must be a single-image model.")
    descriptor.model.requires_grad_(False)
    return descriptor.eval().to(device)


@dataclass(frozen=True)
class UpscaleModel:
    """UPSCALE_MODEL: a file and what spandrel found in it; the weights live in the model manager."""

    path: str
    stamp: tuple[int, int]
    architecture_id: str
    scale: int
    input_channels: int
    output_channels: int
    purpose: str
    tags: tuple[str, ...] = ()

    @classmethod
    def open(cls, path: str) -> UpscaleModel:
        """Register the file with the manager and load it once to learn (and check) what it holds."""
        stat = os.stat(path)
        probe = cls(os.path.realpath(path), (stat.st_mtime_ns, stat.st_size), "", 1, 3, 3, "")
        with probe.use() as descriptor:
            return cls(probe.path, probe.stamp, descriptor.architecture.id, int(descriptor.scale),
                       int(descriptor.input_channels), int(descriptor.output_channels), str(descriptor.purpose),
                       tuple(descriptor.tags))

    def _key(self) -> str:
        return f"{self.path}#upscale@{self.stamp[0]}:{self.stamp[1]}"

    def handle(self) -> Any:
        from comfy_kernel import gpu

        size = None
        if self.path.lower().endswith((".safetensors", ".sft")):
            from comfy_kernel.gpu.loading import weights_size

            size = weights_size(self.path, "", 4)
        path = self.path

        def load(device: str) -> Any:
            return _held_module(load_descriptor(path, device))

        return gpu.model_manager().register(self._key(), load, size=size)

    @contextmanager
    def use(self) -> Iterator[Any]:
        """spandrel's descriptor on its device, pinned for the block."""
        from comfy_kernel import gpu

        with gpu.model_manager().use(self.handle()) as held:
            yield held.descriptor

    # -- what packs that expect spandrel's descriptor use --

    @property
    def model(self) -> Any:
        from comfy_kernel import gpu

        return gpu.model_manager().load(self.handle()).descriptor.model

    @property
    def architecture(self) -> Any:
        with self.use() as descriptor:
            return descriptor.architecture

    @property
    def size_requirements(self) -> Any:
        with self.use() as descriptor:
            return descriptor.size_requirements

    def to(self, *args: Any, **kwargs: Any) -> UpscaleModel:
        """Placement belongs to the model manager; kept for code written against spandrel."""
        return self

    def eval(self) -> UpscaleModel:
        return self

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        with self.use() as descriptor:
            return descriptor(image.to(descriptor.device))


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where tiles begin along one axis; the last ones may be shorter than ``tile``."""
    if size <= tile:
        return [0]
    return [max(0, min(size - overlap, p)) for p in range(0, size - overlap, tile - overlap)]


def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
    rows = 1 if height <= tile else math.ceil((height - overlap) / (tile - overlap))
    cols = 1 if width <= tile else math.ceil((width - overlap) / (tile - overlap))
    return rows * cols


def tiled_upscale(samples: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int, overlap: int,
                  scale: float, out_channels: int, output_device: Any = "cpu",
                  on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """Apply ``fn`` to ``[B, C, H, W]`` one image and one tile at a time, blending the overlaps."""
    import torch

    batch, _, height, width = samples.shape
    out_h, out_w = round(height * scale), round(width * scale)
    output = torch.empty((batch, out_channels, out_h, out_w), device=output_device)
    feather = round(overlap * scale)
    for b in range(batch):
        sample = samples[b:b + 1]
        if height <= tile and width <= tile:
            output[b:b + 1] = fn(sample).to(output_device)
            if on_tile:
                on_tile()
            continue
        acc = torch.zeros((1, out_channels, out_h, out_w), device=output_device)
        weight = torch.zeros_like(acc)
        for y in tile_starts(height, tile, overlap):
            for x in tile_starts(width, tile, overlap):
                piece = sample[:, :, y:y + min(tile, height - y), x:x + min(tile, width - x)]
                result = fn(piece).to(output_device)
                mask = torch.ones_like(result)
                for dim in (2, 3):
                    length = mask.shape[dim]
                    if feather >= length:
                        continue
                    for t in range(feather):
                        ramp = (t + 1) / feather
                        mask.narrow(dim, t, 1).mul_(ramp)
                        mask.narrow(dim, length - 1 - t, 1).mul_(ramp)
                oy, ox = round(y * scale), round(x * scale)
                region = (slice(None), slice(None), slice(oy, oy + result.shape[2]), slice(ox, ox + result.shape[3]))
                acc[region] += result * mask
                weight[region] += mask
                if on_tile:
                    on_tile()
        output[b:b + 1] = acc / weight
    return output


def _is_oom(exc: BaseException) -> bool:
    import torch

    message = str(exc).lower()
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and ("out of memory" in message or "not enough memory" in message))


def upscale_image(model: Any, image: torch.Tensor, tile: int = TILE, overlap: int = OVERLAP) -> torch.Tensor:
    """IMAGE ``[B, H, W, C]`` upscaled by ``model`` (alpha, if any, resized bilinearly), float32 on the CPU.

    ``model`` is an :class:`UpscaleModel`, or a spandrel descriptor a node pack loaded itself (run where
    it is, outside the model manager).
    """
    from contextlib import nullcontext

    import torch

    from comfy_kernel import gpu
    from comfy_kernel.nodes.resize import common_upscale
    from comfy_kernel.progress import ProgressBar, throw_exception_if_processing_interrupted

    alpha = None
    if image.shape[-1] == 4:
        image, alpha = image[..., :3], image[..., 3:4]
    manager = gpu.model_manager()
    with model.use() if isinstance(model, UpscaleModel) else nullcontext(model) as descriptor:
        device = descriptor.device
        needed = (512 * 512 * 3) * image.element_size() * max(descriptor.scale, 1.0) * ACTIVATION_FACTOR
        manager.free_memory(int(needed + image.nelement() * image.element_size()), str(device))
        pixels = image.movedim(-1, -3).to(device, torch.float32)

        def step(bar: Any) -> Callable[[], None]:
            def advance() -> None:
                throw_exception_if_processing_interrupted()
                bar.update(1)
            return advance

        while True:
            try:
                bar = ProgressBar(pixels.shape[0] * tile_count(pixels.shape[3], pixels.shape[2], tile, overlap))
                with torch.inference_mode():
                    out = tiled_upscale(pixels, descriptor, tile, overlap, descriptor.scale, descriptor.output_channels,
                                        "cpu", step(bar))
                break
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                tile //= 2
                if tile < MIN_TILE:
                    raise
                if str(device).startswith("cuda"):
                    torch.cuda.empty_cache()
    out = torch.clamp(out.movedim(-3, -1), min=0.0, max=1.0)
    if alpha is not None:
        resized = common_upscale(alpha.movedim(-1, -3).to(out), out.shape[2], out.shape[1], "bilinear", "disabled")
        out = torch.cat((out, resized.movedim(-3, -1)), dim=-1)
    return out
