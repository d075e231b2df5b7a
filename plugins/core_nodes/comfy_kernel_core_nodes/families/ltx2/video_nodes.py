"""LTX-Video's conditioning, latent and scheduling nodes (ComfyUI's comfy_extras.nodes_lt) for LTX-2.

Image conditioning pins latent frames through the noise mask: the mask's
value per frame (1 - strength) becomes that frame's timestep in the model, and
the sampler keeps the masked part of the latent. ``LTXVImgToVideo`` and
``LTXVImgToVideoInplace`` write the encoded image over the first latent frames;
``LTXVAddGuide`` appends the encoded guide frames to the end of the latent and
records their pixel positions (``keyframe_idxs``) so the transformer places
them at ``frame_idx``; ``LTXVCropGuides`` removes them again after sampling.
``LTXVScheduler`` and ``ModelSamplingLTXV`` shift the flow schedule with the
token count. Contracts: 0.3.64's, and current ComfyUI's for the nodes added
with LTX-2 (``tests/data/newer/nodes_lt.json``); ``nodes.py`` lists them.
"""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes import io

#: pixel frames, rows, columns per latent token (the video VAE's compression)
SCALE = (8, 32, 32)
VIDEO_CATEGORY = "conditioning/video_models"


def _set(conditioning: list, values: dict[str, Any]) -> list:
    from ...nodes.conditioning_area import set_values

    return set_values(conditioning, values)


def _first_value(conditioning: list, key: str) -> Any:
    return next((options[key] for _, options in conditioning if key in options), None)


def noise_mask_of(latent: dict[str, Any]) -> Any:
    """The latent's noise mask (a copy), or ones per latent frame [B, 1, F, 1, 1]."""
    import torch

    mask = latent.get("noise_mask")
    if mask is not None:
        return mask.clone()
    samples = latent["samples"]
    return torch.ones((samples.shape[0], 1, samples.shape[2], 1, 1), dtype=torch.float32, device=samples.device)


def guide_frames(conditioning: list, latent_shape: Any) -> int:
    """How many latent frames at the end of the latent are guides (from the recorded token positions)."""
    keyframes = _first_value(conditioning, "keyframe_idxs")
    if keyframes is None:
        return 0
    return keyframes.shape[2] // (latent_shape[-2] * latent_shape[-1])


def _scale(vae: Any) -> tuple[int, int, int]:
    return tuple(getattr(vae, "downscale_index_formula", SCALE))


def _encode(vae: Any, image: Any, width: int, height: int) -> Any:
    """IMAGE frames resized (bilinear) to width x height -> the VAE's latent frames."""
    from comfy_kernel.nodes.resize import common_upscale

    if image.shape[1] != height or image.shape[2] != width:
        image = common_upscale(image.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)
    return vae.encode(image[..., :3])


class LTXVImgToVideo(io.ComfyNode):
    """An empty latent with the image's latent frames at its start, kept by the noise mask (1 - strength)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVImgToVideo", category=VIDEO_CATEGORY, inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Image.Input("image"),
            io.Int.Input("width", default=768, min=64, max=16384, step=32),
            io.Int.Input("height", default=512, min=64, max=16384, step=32),
            io.Int.Input("length", default=97, min=9, max=16384, step=8),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.Float.Input("strength", default=1.0, min=0.0, max=1.0),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive, negative, vae, image, width: int, height: int, length: int, batch_size: int,
                strength: float) -> io.NodeOutput:
        import torch

        encoded = _encode(vae, image, width, height)
        latent = torch.zeros([batch_size, 128, (length - 1) // 8 + 1, height // 32, width // 32])
        latent[:, :, : encoded.shape[2]] = encoded
        mask = torch.ones((batch_size, 1, latent.shape[2], 1, 1))
        mask[:, :, : encoded.shape[2]] = 1.0 - strength
        return io.NodeOutput(positive, negative, {"samples": latent, "noise_mask": mask})


class LTXVImgToVideoInplace(io.ComfyNode):
    """The image's latent frames written over the start of a given latent, kept by its noise mask."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVImgToVideoInplace", category="model/conditioning/ltxv", inputs=[
            io.Vae.Input("vae"), io.Image.Input("image"), io.Latent.Input("latent"),
            io.Float.Input("strength", default=1.0, min=0.0, max=1.0),
            io.Boolean.Input("bypass", default=False, tooltip="Skip the conditioning: the latent passes unchanged."),
        ], outputs=[io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, vae, image, latent, strength: float, bypass: bool = False) -> io.NodeOutput:
        if bypass:
            return io.NodeOutput(latent)
        samples = latent["samples"].clone()
        _, sh, sw = _scale(vae)
        encoded = _encode(vae, image, samples.shape[4] * sw, samples.shape[3] * sh)
        samples[:, :, : encoded.shape[2]] = encoded
        mask = noise_mask_of(latent)
        mask[:, :, : encoded.shape[2]] = 1.0 - strength
        return io.NodeOutput({"samples": samples, "noise_mask": mask})


ICLoRAParameters = io.Custom("IC_LORA_PARAMETERS")


class GetICLoRAParameters(io.ComfyNode):
    """An IC-LoRA's guide settings from the metadata of the LoRA file the model was patched with last."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="GetICLoRAParameters", display_name="Get IC-LoRA Parameters",
                         category="model/conditioning/ltxv",
                         description="The IC-LoRA's reference_downscale_factor (1 when its file does not say), "
                                     "for LTXVAddGuide.",
                         inputs=[io.Model.Input("iclora_model", tooltip="The model right after the IC-LoRA's "
                                                                        "LoRA loader.")],
                         outputs=[ICLoRAParameters.Output("iclora_parameters")])

    @classmethod
    def execute(cls, iclora_model) -> io.NodeOutput:
        metadata = iclora_model.get_attachment("lora_metadata") or {}
        value = next((v for k, v in metadata.items() if k.endswith("reference_downscale_factor")), None)
        return io.NodeOutput({"reference_downscale_factor": _factor(value)})


def _factor(value: Any) -> int:
    """A whole downscale factor of at least 1 (1 for anything unreadable)."""
    try:
        return max(1, round(float(value)))
    except (TypeError, ValueError):
        return 1


class LTXVAddGuide(io.ComfyNode):
    """Guide frames appended after the latent's own, pinned by the noise mask and placed at ``frame_idx``.

    An IC-LoRA whose guides were trained smaller (``reference_downscale_factor`` f) gets them encoded at 1/f
    of the size and spread over the latent's grid, every f-th token; the tokens between are marked -1 in the
    noise mask, and the transformer leaves them out. ``strength`` other than 1, or an ``attention_mask``,
    scales how much the video and the guide attend to each other (``guide_attention_entries``).
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVAddGuide", category="model/conditioning/ltxv", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Latent.Input("latent"),
            io.Image.Input("image", tooltip="An image or video (1 + 8n frames; others are cut to that) to guide "
                                            "the video with."),
            io.Int.Input("frame_idx", default=0, min=-9999, max=9999,
                         tooltip="The pixel frame the guide starts at; negative counts from the end. Guides of "
                                 "9 frames or more start on a multiple of 8 (rounded down)."),
            io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01),
            io.Mask.Input("attention_mask", optional=True,
                          tooltip="Where the guide counts (pixel space), times strength, through attention."),
            ICLoRAParameters.Input("iclora_parameters", optional=True,
                                   tooltip="From Get IC-LoRA Parameters, for IC-LoRAs trained on smaller guides."),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive, negative, vae, latent, image, frame_idx: int, strength: float,
                attention_mask=None, iclora_parameters=None) -> io.NodeOutput:
        import torch

        from ...model.nested import is_nested
        from .transformer import pixel_bounds

        scale = _scale(vae)
        samples = latent["samples"]
        if is_nested(samples):
            raise ValueError("LTXVAddGuide takes the video latent; join the audio latent after it "
                             "(LTXVConcatAVLatent)")
        factor = _factor((iclora_parameters or {}).get("reference_downscale_factor", 1))
        mask = noise_mask_of(latent)
        length, height, width = samples.shape[2:]
        if height % factor or width % factor:
            raise ValueError(f"the latent's size {width}x{height} must be divisible by the IC-LoRA's "
                             f"reference_downscale_factor {factor}")
        image = image[: (image.shape[0] - 1) // scale[0] * scale[0] + 1]
        encoded = _encode(vae, image, width * scale[2] // factor, height * scale[1] // factor)
        own = length - guide_frames(positive, samples.shape)
        if frame_idx < 0:
            frame_idx = max((own - 1) * scale[0] + 1 + frame_idx, 0)
        if image.shape[0] > 1 and frame_idx != 0:
            frame_idx = (frame_idx - 1) // scale[0] * scale[0] + 1
        if (frame_idx + scale[0] - 1) // scale[0] + encoded.shape[2] > own:
            raise ValueError("the guide frames run past the end of the video latent")
        small_shape = list(encoded.shape[2:])
        if factor > 1:
            spread = encoded.new_zeros(*encoded.shape[:3], height, width)
            spread[..., ::factor, ::factor] = encoded
            kept = torch.full((encoded.shape[0], 1, *spread.shape[2:]), -1.0, dtype=mask.dtype)
            kept[..., ::factor, ::factor] = 1.0
            encoded = spread
            mask = mask.expand(-1, -1, -1, height, width)
            guide_mask = kept - strength
        else:
            guide_mask = torch.full((mask.shape[0], 1, encoded.shape[2], mask.shape[3], mask.shape[4]),
                                    max(0.0, 1.0 - strength), dtype=mask.dtype)
        causal = frame_idx == 0 or encoded.shape[2] == 1
        bounds = pixel_bounds(tuple(encoded.shape[2:]), scale, encoded.shape[0], causal=causal)
        bounds[:, 0] += frame_idx
        # a spread token stands for f x f of the guide's cells: its span ends f - 1 cells further
        bounds[:, 1:, :, 1] += torch.tensor(scale[1:], dtype=bounds.dtype).view(1, 2, 1) * (factor - 1)
        entry = {"pre_filter_count": math.prod(encoded.shape[2:]), "strength": strength,
                 "pixel_mask": None if attention_mask is None else attention_mask[None, None],
                 "latent_shape": small_shape}

        def add(conditioning: list) -> list:
            previous = _first_value(conditioning, "keyframe_idxs")
            entries = _first_value(conditioning, "guide_attention_entries") or []
            return _set(conditioning, {"keyframe_idxs": bounds if previous is None
                                       else torch.cat([previous, bounds], dim=2),
                                       "guide_attention_entries": [*entries, entry]})

        return io.NodeOutput(add(positive), add(negative),
                             {"samples": torch.cat([samples, encoded.to(samples.dtype)], dim=2),
                              "noise_mask": torch.cat([mask, guide_mask], dim=2)})


class LTXVCropGuides(io.ComfyNode):
    """The guide frames LTXVAddGuide appended, removed from the latent and the conditioning."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVCropGuides", category=VIDEO_CATEGORY, inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Latent.Input("latent"),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive, negative, latent) -> io.NodeOutput:
        samples = latent["samples"].clone()
        mask = noise_mask_of(latent)
        guides = guide_frames(positive, samples.shape)
        if guides == 0:
            return io.NodeOutput(positive, negative, {"samples": samples, "noise_mask": mask})
        cleared = {"keyframe_idxs": None, "guide_attention_entries": None}
        return io.NodeOutput(_set(positive, cleared), _set(negative, cleared),
                             {"samples": samples[:, :, :-guides], "noise_mask": mask[:, :, :-guides]})


def token_shift(max_shift: float, base_shift: float, latent: dict[str, Any] | None) -> float:
    """The flow shift for the latent's token count: linear from base_shift at 1024 to max_shift at 4096 tokens."""
    tokens = 4096 if latent is None else math.prod(latent["samples"].shape[2:])
    slope = (max_shift - base_shift) / (4096 - 1024)
    return tokens * slope + base_shift - slope * 1024


class ModelSamplingLTXV(io.ComfyNode):
    """Flux-style shifted flow sampling with the token-count shift."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ModelSamplingLTXV", category="advanced/model", inputs=[
            io.Model.Input("model"),
            io.Float.Input("max_shift", default=2.05, min=0.0, max=100.0, step=0.01),
            io.Float.Input("base_shift", default=0.95, min=0.0, max=100.0, step=0.01),
            io.Latent.Input("latent", optional=True),
        ], outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model, max_shift: float, base_shift: float, latent=None) -> io.NodeOutput:
        from ...model import model_sampling as ms

        patched = model.clone()
        sampling = ms.combine(ms.ModelSamplingFlux, ms.CONST, model.model.model_config)
        sampling.set_parameters(shift=token_shift(max_shift, base_shift, latent))
        patched.add_object_patch("model_sampling", sampling)
        return io.NodeOutput(patched)


def ltxv_sigmas(steps: int, max_shift: float, base_shift: float, stretch: bool, terminal: float,
                latent: dict[str, Any] | None = None) -> Any:
    """``steps + 1`` sigmas from 1 to 0 shifted by the token-count shift; ``stretch`` rescales 1 - sigma so the
    last non-zero sigma is ``terminal``."""
    import torch

    shift = math.exp(token_shift(max_shift, base_shift, latent))
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    sigmas = torch.where(sigmas != 0, shift / (shift + (1 / sigmas - 1)), 0)
    if stretch:
        nonzero = sigmas != 0
        rest = 1.0 - sigmas[nonzero]
        sigmas[nonzero] = 1.0 - rest / (rest[-1] / (1.0 - terminal))
    return sigmas


class LTXVScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVScheduler", category="sampling/custom_sampling/schedulers", inputs=[
            io.Int.Input("steps", default=20, min=1, max=10000),
            io.Float.Input("max_shift", default=2.05, min=0.0, max=100.0, step=0.01),
            io.Float.Input("base_shift", default=0.95, min=0.0, max=100.0, step=0.01),
            io.Boolean.Input("stretch", default=True, tooltip="Stretch the sigmas to be in the range [terminal, 1]."),
            io.Float.Input("terminal", default=0.1, min=0.0, max=0.99, step=0.01,
                           tooltip="The terminal value of the sigmas after stretching."),
            io.Latent.Input("latent", optional=True),
        ], outputs=[io.Sigmas.Output()])

    @classmethod
    def execute(cls, steps: int, max_shift: float, base_shift: float, stretch: bool, terminal: float,
                latent=None) -> io.NodeOutput:
        return io.NodeOutput(ltxv_sigmas(steps, max_shift, base_shift, stretch, terminal, latent))


def compress_frame(image: Any, crf: int) -> Any:
    """One frame [H, W, C] through H.264 at ``crf`` and back (even size), as the model's training videos were."""
    import io as bytes_io

    import av
    import numpy as np
    import torch

    if crf == 0:
        return image
    pixels = (image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2, :3] * 255.0).byte().cpu().numpy()
    buffer = bytes_io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = pixels.shape[0], pixels.shape[1]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return torch.tensor(decoded, dtype=image.dtype, device=image.device) / 255.0


class LTXVPreprocess(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVPreprocess", category="image", inputs=[
            io.Image.Input("image"),
            io.Int.Input("img_compression", default=35, min=0, max=100,
                         tooltip="Amount of compression to apply on image."),
        ], outputs=[io.Image.Output(display_name="output_image")])

    @classmethod
    def execute(cls, image, img_compression: int) -> io.NodeOutput:
        import torch

        return io.NodeOutput(torch.stack([compress_frame(frame, img_compression) for frame in image]))
