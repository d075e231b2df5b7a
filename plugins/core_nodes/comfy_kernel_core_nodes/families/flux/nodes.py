"""Flux's nodes: ComfyUI's comfy_extras.nodes_flux, and ReferenceLatent (nodes_edit_model)."""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from ...nodes.common import MAX_RESOLUTION, NodeDef

MODULE = "comfy_extras.nodes_flux"
CATEGORY = "advanced/conditioning/flux"


def set_values(conditioning: list, values: dict[str, Any], append: bool = False) -> list:
    """A copy of ``conditioning`` with ``values`` set in every entry's options (lists appended to when asked)."""
    out = []
    for cond, options in conditioning:
        options = dict(options)
        for key, value in values.items():
            if append and options.get(key) is not None:
                value = options[key] + value
            options[key] = value
        out.append([cond, options])
    return out


class CLIPTextEncodeFlux(io.ComfyNode):
    """CLIP-L's and T5's prompts separately, with the guidance strength."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CLIPTextEncodeFlux", category=CATEGORY, inputs=[
            io.Clip.Input("clip"),
            io.String.Input("clip_l", multiline=True, dynamic_prompts=True),
            io.String.Input("t5xxl", multiline=True, dynamic_prompts=True),
            io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, clip, clip_l, t5xxl, guidance) -> io.NodeOutput:
        tokens = clip.tokenize(clip_l)
        tokens["t5xxl"] = clip.tokenize(t5xxl)["t5xxl"]
        return io.NodeOutput(clip.encode_from_tokens_scheduled(tokens, add_dict={"guidance": guidance}))


class FluxGuidance(io.ComfyNode):
    """The distilled guidance strength Flux dev is conditioned on (what CFG would have been)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FluxGuidance", category=CATEGORY, inputs=[
            io.Conditioning.Input("conditioning"),
            io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, conditioning, guidance) -> io.NodeOutput:
        return io.NodeOutput(set_values(conditioning, {"guidance": guidance}))


class FluxDisableGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FluxDisableGuidance", category=CATEGORY,
                         description="Turns the guidance embedding of Flux-style models off for this conditioning.",
                         inputs=[io.Conditioning.Input("conditioning")], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, conditioning) -> io.NodeOutput:
        return io.NodeOutput(set_values(conditioning, {"guidance": None}))


#: The (width, height) Kontext was trained at, all about one megapixel.
KONTEXT_RESOLUTIONS = [(672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184),
                       (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752),
                       (1456, 720), (1504, 688), (1568, 672)]


class FluxKontextImageScale(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FluxKontextImageScale", category=CATEGORY,
                         description="Resizes an image to the Kontext training resolution closest in aspect ratio.",
                         inputs=[io.Image.Input("image")], outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, image) -> io.NodeOutput:
        from comfy_kernel.nodes.resize import common_upscale

        aspect = image.shape[2] / image.shape[1]
        _, width, height = min((abs(aspect - w / h), w, h) for w, h in KONTEXT_RESOLUTIONS)
        scaled = common_upscale(image.movedim(-1, 1), width, height, "lanczos", "center").movedim(1, -1)
        return io.NodeOutput(scaled)


class FluxKontextMultiReferenceLatentMethod(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FluxKontextMultiReferenceLatentMethod", category=CATEGORY, inputs=[
            io.Conditioning.Input("conditioning"),
            io.Combo.Input("reference_latents_method", options=["offset", "index", "uxo/uno", "index_timestep_zero"]),
        ], outputs=[io.Conditioning.Output()], is_experimental=True)

    @classmethod
    def execute(cls, conditioning, reference_latents_method) -> io.NodeOutput:
        if "uxo" in reference_latents_method or "uso" in reference_latents_method:
            reference_latents_method = "uxo"
        return io.NodeOutput(set_values(conditioning, {"reference_latents_method": reference_latents_method}))


class ReferenceLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ReferenceLatent", category="advanced/conditioning/edit_models",
                         description="Adds a reference image's latent for edit models (Kontext, Flux.2); chain "
                                     "several for several references.",
                         inputs=[io.Conditioning.Input("conditioning"), io.Latent.Input("latent", optional=True)],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, conditioning, latent=None) -> io.NodeOutput:
        if latent is not None:
            conditioning = set_values(conditioning, {"reference_latents": [latent["samples"]]}, append=True)
        return io.NodeOutput(conditioning)


class EmptyFlux2LatentImage(io.ComfyNode):
    """An all-zero Flux.2 latent: 128 channels at 1/16 of the image size."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="EmptyFlux2LatentImage", display_name="Empty Flux 2 Latent", category="latent",
                         inputs=[io.Int.Input("width", default=1024, min=16, max=MAX_RESOLUTION, step=16),
                                 io.Int.Input("height", default=1024, min=16, max=MAX_RESOLUTION, step=16),
                                 io.Int.Input("batch_size", default=1, min=1, max=4096)],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, width, height, batch_size=1) -> io.NodeOutput:
        import torch

        return io.NodeOutput({"samples": torch.zeros([batch_size, 128, height // 16, width // 16])})


def flux2_mu(image_seq_len: int, num_steps: int) -> float:
    """Flux.2's shift: linear in the image's token count, interpolated between 10 and 200 steps below 4300 tokens."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if image_seq_len > 4300:
        return float(a2 * image_seq_len + b2)
    m_200 = a2 * image_seq_len + b2
    m_10 = a1 * image_seq_len + b1
    slope = (m_200 - m_10) / 190.0
    return float(slope * num_steps + (m_200 - 200.0 * slope))


def flux2_sigmas(steps: int, image_seq_len: int) -> Any:
    import math

    import torch

    mu = flux2_mu(image_seq_len, steps)
    t = torch.linspace(1, 0, steps + 1)
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


class Flux2Scheduler(io.ComfyNode):
    """Flux.2's sigmas for a step count and image size (the shift follows both)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="Flux2Scheduler", category="sampling/custom_sampling/schedulers", inputs=[
            io.Int.Input("steps", default=20, min=1, max=4096),
            io.Int.Input("width", default=1024, min=16, max=MAX_RESOLUTION, step=1),
            io.Int.Input("height", default=1024, min=16, max=MAX_RESOLUTION, step=1),
        ], outputs=[io.Sigmas.Output()])

    @classmethod
    def execute(cls, steps, width, height) -> io.NodeOutput:
        return io.NodeOutput(flux2_sigmas(steps, round(width * height / (16 * 16))))


NODES = [
    NodeDef("CLIPTextEncodeFlux", CLIPTextEncodeFlux, None, MODULE),
    NodeDef("FluxGuidance", FluxGuidance, None, MODULE),
    NodeDef("FluxDisableGuidance", FluxDisableGuidance, None, MODULE),
    NodeDef("FluxKontextImageScale", FluxKontextImageScale, None, MODULE),
    NodeDef("FluxKontextMultiReferenceLatentMethod", FluxKontextMultiReferenceLatentMethod, None, MODULE),
    NodeDef("ReferenceLatent", ReferenceLatent, None, "comfy_extras.nodes_edit_model"),
    NodeDef("EmptyFlux2LatentImage", EmptyFlux2LatentImage, "Empty Flux 2 Latent", MODULE),
    NodeDef("Flux2Scheduler", Flux2Scheduler, None, MODULE),
]
