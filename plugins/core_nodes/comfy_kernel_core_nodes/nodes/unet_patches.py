"""MODEL patches at the UNet's patch points: FreeU, PAG, SAG, Deep Shrink, HyperTile, ToMe, Epsilon Scaling,
TSR.

Each node clones the MODEL and registers a function from ``patches/`` at the
point ComfyUI registers it; the network or the guidance calls it while
sampling (see families/sd/unet.py and sampling/guider.py for where).
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

UNET = "model_patches/unet"


def _freeu_inputs(b1: float, b2: float) -> dict[str, Any]:
    def weight(default: float) -> tuple[str, dict[str, Any]]:
        return ("FLOAT", {"default": default, "min": 0.0, "max": 10.0, "step": 0.01})

    return {"required": {"model": ("MODEL",), "b1": weight(b1), "b2": weight(b2), "s1": weight(0.9),
                         "s2": weight(0.2)}}


class FreeU:
    CATEGORY = UNET
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    VERSION2 = False

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _freeu_inputs(1.1, 1.2)

    def patch(self, model: Any, b1: float, b2: float, s1: float, s2: float) -> tuple[Any]:
        """Decoder backbone features scaled by b1/b2, skip features' low frequencies by s1/s2
        (on the blocks of 4x and 2x the model's base channels)."""
        from ..patches.unet import freeu

        channels = model.model.model_config.unet_config["model_channels"]
        m = model.clone()
        m.set_model_output_block_patch(freeu(channels, b1, b2, s1, s2, v2=self.VERSION2))
        return (m,)


class FreeU_V2(FreeU):  # noqa: N801
    VERSION2 = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _freeu_inputs(1.3, 1.4)


class PerturbedAttentionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PerturbedAttentionGuidance", category=UNET,
                         inputs=[io.Model.Input("model"),
                                 io.Float.Input("scale", default=3.0, min=0.0, max=100.0, step=0.01, round=0.01)],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, scale: float) -> io.NodeOutput:
        from ..patches.reguidance import perturbed_attention_guidance

        m = model.clone()
        m.set_model_sampler_post_cfg_function(perturbed_attention_guidance(scale))
        return io.NodeOutput(m)


class SelfAttentionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="SelfAttentionGuidance", display_name="Self-Attention Guidance",
                         category="_for_testing", is_experimental=True,
                         inputs=[io.Model.Input("model"),
                                 io.Float.Input("scale", default=0.5, min=-2.0, max=5.0, step=0.01),
                                 io.Float.Input("blur_sigma", default=2.0, min=0.0, max=10.0, step=0.1)],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, scale: float, blur_sigma: float) -> io.NodeOutput:
        from ..patches.reguidance import SelfAttentionGuidance as Sag

        sag = Sag(scale, blur_sigma)
        m = model.clone()
        m.set_model_sampler_post_cfg_function(sag.post_cfg, disable_cfg1_optimization=True)
        m.set_model_attn1_replace(sag.attn1_replace, "middle", 0, 0)
        return io.NodeOutput(m)


class PatchModelAddDownscale(io.ComfyNode):
    UPSCALE_METHODS = ["bicubic", "nearest-exact", "bilinear", "area", "bislerp"]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PatchModelAddDownscale", display_name="PatchModelAddDownscale (Kohya Deep Shrink)",
            category=UNET,
            inputs=[io.Model.Input("model"),
                    io.Int.Input("block_number", default=3, min=1, max=32, step=1),
                    io.Float.Input("downscale_factor", default=2.0, min=0.1, max=9.0, step=0.001),
                    io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001),
                    io.Float.Input("end_percent", default=0.35, min=0.0, max=1.0, step=0.001),
                    io.Boolean.Input("downscale_after_skip", default=True),
                    io.Combo.Input("downscale_method", options=cls.UPSCALE_METHODS),
                    io.Combo.Input("upscale_method", options=cls.UPSCALE_METHODS)],
            outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, block_number: int, downscale_factor: float, start_percent: float,
                end_percent: float, downscale_after_skip: bool, downscale_method: str,
                upscale_method: str) -> io.NodeOutput:
        from ..patches.unet import deep_shrink

        model_sampling = model.get_model_object("model_sampling")
        down, up = deep_shrink(block_number, downscale_factor, model_sampling.percent_to_sigma(start_percent),
                               model_sampling.percent_to_sigma(end_percent), downscale_method, upscale_method)
        m = model.clone()
        if downscale_after_skip:
            m.set_model_input_block_patch_after_skip(down)
        else:
            m.set_model_input_block_patch(down)
        m.set_model_output_block_patch(up)
        return io.NodeOutput(m)


class HyperTile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="HyperTile", category=UNET,
                         inputs=[io.Model.Input("model"), io.Int.Input("tile_size", default=256, min=1, max=2048),
                                 io.Int.Input("swap_size", default=2, min=1, max=128),
                                 io.Int.Input("max_depth", default=0, min=0, max=10),
                                 io.Boolean.Input("scale_depth", default=False)],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, tile_size: int, swap_size: int, max_depth: int, scale_depth: bool) -> io.NodeOutput:
        from ..patches.unet import hypertile

        attn_in, attn_out = hypertile(tile_size, swap_size, max_depth, scale_depth)
        m = model.clone()
        m.set_model_attn1_patch(attn_in)
        m.set_model_attn1_output_patch(attn_out)
        return io.NodeOutput(m)


class TomePatchModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TomePatchModel", category=UNET,
                         inputs=[io.Model.Input("model"),
                                 io.Float.Input("ratio", default=0.3, min=0.0, max=1.0, step=0.01)],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, ratio: float) -> io.NodeOutput:
        from ..patches.unet import token_merging

        attn_in, attn_out = token_merging(ratio)
        m = model.clone()
        m.set_model_attn1_patch(attn_in)
        m.set_model_attn1_output_patch(attn_out)
        return io.NodeOutput(m)


class EpsilonScaling(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="Epsilon Scaling", category=UNET,
                         inputs=[io.Model.Input("model"),
                                 io.Float.Input("scaling_factor", default=1.005, min=0.5, max=1.5, step=0.001,
                                                display_mode="number")],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, scaling_factor: float) -> io.NodeOutput:
        from ..patches.cfg import epsilon_scaling

        m = model.clone()
        m.set_model_sampler_post_cfg_function(epsilon_scaling(scaling_factor))
        return io.NodeOutput(m)


class TemporalScoreRescaling(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TemporalScoreRescaling", display_name="TSR - Temporal Score Rescaling",
                         category="model/patch/unet",
                         inputs=[io.Model.Input("model"),
                                 io.Float.Input("tsr_k", default=0.95, min=0.01, max=100.0, step=0.001,
                                                display_mode="number",
                                                tooltip="Rescaling strength: below 1 more detail, above 1 smoother; "
                                                        "1 turns it off."),
                                 io.Float.Input("tsr_sigma", default=1.0, min=0.01, max=100.0, step=0.001,
                                                display_mode="number",
                                                tooltip="How early in sampling the rescaling sets in (larger: "
                                                        "earlier).")],
                         outputs=[io.Model.Output(display_name="patched_model")])

    @classmethod
    def execute(cls, model: Any, tsr_k: float, tsr_sigma: float) -> io.NodeOutput:
        from ..patches.cfg import temporal_score_rescaling

        m = model.clone()
        m.set_model_sampler_post_cfg_function(temporal_score_rescaling(tsr_k, tsr_sigma))
        return io.NodeOutput(m)


NODES = [
    NodeDef("FreeU", FreeU, "FreeU", "comfy_extras.nodes_freelunch"),
    NodeDef("FreeU_V2", FreeU_V2, "FreeU_V2", "comfy_extras.nodes_freelunch"),
    NodeDef("PerturbedAttentionGuidance", PerturbedAttentionGuidance, None, "comfy_extras.nodes_pag"),
    NodeDef("SelfAttentionGuidance", SelfAttentionGuidance, "Self-Attention Guidance", "comfy_extras.nodes_sag"),
    NodeDef("PatchModelAddDownscale", PatchModelAddDownscale, "PatchModelAddDownscale (Kohya Deep Shrink)",
            "comfy_extras.nodes_model_downscale"),
    NodeDef("HyperTile", HyperTile, None, "comfy_extras.nodes_hypertile"),
    NodeDef("TomePatchModel", TomePatchModel, None, "comfy_extras.nodes_tomesd"),
    NodeDef("Epsilon Scaling", EpsilonScaling, None, "comfy_extras.nodes_eps"),
    NodeDef("TemporalScoreRescaling", TemporalScoreRescaling, "TSR - Temporal Score Rescaling",
            "comfy_extras.nodes_eps"),
]
