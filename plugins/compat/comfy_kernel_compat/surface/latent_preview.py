"""ComfyUI's ``latent_preview``: sampler step callbacks with optional previews.

With the core_nodes plugin, ``prepare_callback`` is the one the core KSampler
nodes use (progress, previews, interrupt checkpoints). Without it, a small
stand-alone ``prepare_callback`` drives the kernel's ProgressBar (so ``progress``,
``progress_state``, interrupt checkpoints) and, with ``--preview-method``
``latent2rgb``/``auto``, attaches a cheap linear RGB projection of ``x0``.
TAESD decoders are not bundled: ``taesd`` falls back to latent2rgb.
"""

from __future__ import annotations

from typing import Any

from comfy.cli_args import LatentPreviewMethod, args

from comfy_kernel.progress import ProgressBar

MAX_PREVIEW_RESOLUTION = 512


def preview_to_image(latent_image: Any) -> Any:
    """An HWC float tensor in [-1, 1] to a PIL image."""
    from PIL import Image

    array = ((latent_image + 1.0) / 2.0).clamp(0, 1).mul(255).round().byte().cpu().numpy()
    return Image.fromarray(array)


class LatentPreviewer:
    def decode_latent_to_preview(self, x0: Any) -> Any:
        raise NotImplementedError

    def decode_latent_to_preview_image(self, preview_format: str, x0: Any) -> tuple[str, Any, int]:
        return preview_format, self.decode_latent_to_preview(x0), MAX_PREVIEW_RESOLUTION


class Latent2RGBPreviewer(LatentPreviewer):
    """Projects latent channels to RGB with a fixed matrix (the latent format's ``latent_rgb_factors``)."""

    def __init__(self, latent_rgb_factors: list[list[float]], latent_rgb_factors_bias: list[float] | None = None):
        import torch

        self.factors = torch.tensor(latent_rgb_factors, device="cpu").transpose(0, 1)
        self.bias = torch.tensor(latent_rgb_factors_bias, device="cpu") if latent_rgb_factors_bias else None

    def decode_latent_to_preview(self, x0: Any) -> Any:
        import torch

        weights = self.factors.to(dtype=x0.dtype, device=x0.device)
        bias = self.bias.to(dtype=x0.dtype, device=x0.device) if self.bias is not None else None
        image = torch.nn.functional.linear(x0[0].movedim(0, -1), weights, bias=bias)
        return preview_to_image(image)


class TAESD:
    """ComfyUI's tiny autoencoder class, importable for packs that name it; none is bundled.

    Constructing one raises: ``--preview-method taesd`` previews fall back to latent2rgb here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("TAESD decoders are not available on comfy-kernel (previews use latent2rgb)")


class TAESDPreviewerImpl(LatentPreviewer):
    """Wraps a TAESD-style decoder object the caller provides (none is bundled)."""

    def __init__(self, taesd: Any):
        self.taesd = taesd

    def decode_latent_to_preview(self, x0: Any) -> Any:
        image = self.taesd.decode(x0[:1])[0].movedim(0, 2)
        return preview_to_image(image * 2.0 - 1.0)


def get_previewer(device: Any, latent_format: Any) -> LatentPreviewer | None:
    method = args.preview_method
    if method == LatentPreviewMethod.NoPreviews:
        return None
    factors = getattr(latent_format, "latent_rgb_factors", None)
    if factors is None:
        return None
    return Latent2RGBPreviewer(factors, getattr(latent_format, "latent_rgb_factors_bias", None))


def prepare_callback(model: Any, steps: int, x0_output_dict: dict[str, Any] | None = None) -> Any:
    """A sampler callback ``(step, x0, x, total_steps)`` advancing a ProgressBar with previews."""
    latent_format = getattr(getattr(model, "model", None), "latent_format", None) or getattr(model, "latent_format", None)
    previewer = get_previewer(None, latent_format)
    pbar = ProgressBar(steps)

    def callback(step: int, x0: Any, x: Any, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer and x0 is not None else None
        pbar.update_absolute(step + 1, total_steps, preview)

    return callback


try:  # one implementation: the core samplers' own callback when core_nodes is installed
    from comfy_kernel_core_nodes.nodes.ksampler import prepare_callback  # noqa: F401, F811
except ImportError:  # pragma: no cover - compat without core_nodes
    pass
