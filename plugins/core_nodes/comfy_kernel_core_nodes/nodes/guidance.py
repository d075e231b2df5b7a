"""MODEL patches and guiders that change classifier-free guidance itself.

APG, CFGNorm, CFG-Zero*, Mahiro, TCFG, FreSca, Skip Layer Guidance, Perp-Neg,
the video CFG ramps and LatentApplyOperationCFG. Each registers a function from
``patches/`` at the guidance step ComfyUI uses (cfg, pre-cfg, post-cfg or the
calc_cond_batch function); PerpNegGuider is a GUIDER for SamplerCustomAdvanced.

The Skip Layer Guidance nodes replace ``("dit", ("double_block"|"single_block", i))``
in ``transformer_options["patches_replace"]``, the keys DiT models look up;
the UNet has no such blocks, so on SD1.x they leave the prediction unchanged.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

GUIDANCE = "advanced/guidance"


def _model_out() -> io.Output:
    return io.Model.Output(display_name="patched_model")


class APG(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="APG", display_name="Adaptive Projected Guidance", category="sampling/custom_sampling",
            inputs=[io.Model.Input("model"),
                    io.Float.Input("eta", default=1.0, min=-10.0, max=10.0, step=0.01,
                                   tooltip="Scale of the guidance's part along the positive prediction; 1 keeps "
                                           "plain CFG's."),
                    io.Float.Input("norm_threshold", default=5.0, min=0.0, max=50.0, step=0.1,
                                   tooltip="Largest norm the guidance may have; 0 leaves it uncapped."),
                    io.Float.Input("momentum", default=0.0, min=-5.0, max=1.0, step=0.01,
                                   tooltip="Weight of the running average of past guidance; 0 disables it.")],
            outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, eta: float, norm_threshold: float, momentum: float) -> io.NodeOutput:
        from ..patches.cfg import apg

        m = model.clone()
        m.set_model_sampler_pre_cfg_function(apg(eta, norm_threshold, momentum))
        return io.NodeOutput(m)


class CFGZeroStar(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CFGZeroStar", category=GUIDANCE, inputs=[io.Model.Input("model")],
                         outputs=[_model_out()])

    @classmethod
    def execute(cls, model: Any) -> io.NodeOutput:
        from ..patches.cfg import cfg_zero_star

        m = model.clone()
        m.set_model_sampler_post_cfg_function(cfg_zero_star)
        return io.NodeOutput(m)


class CFGNorm(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CFGNorm", category=GUIDANCE, is_experimental=True,
                         inputs=[io.Model.Input("model"),
                                 io.Float.Input("strength", default=1.0, min=0.0, max=100.0, step=0.01)],
                         outputs=[_model_out()])

    @classmethod
    def execute(cls, model: Any, strength: float) -> io.NodeOutput:
        from ..patches.cfg import cfg_norm

        m = model.clone()
        m.set_model_sampler_post_cfg_function(cfg_norm(strength))
        return io.NodeOutput(m)


class Mahiro(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="Mahiro",
                         display_name="Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)",
                         category="_for_testing", is_experimental=True,
                         description="Guidance that follows the direction of the positive prompt more than its "
                                     "difference from the negative one.",
                         inputs=[io.Model.Input("model")], outputs=[_model_out()])

    @classmethod
    def execute(cls, model: Any) -> io.NodeOutput:
        from ..patches.cfg import mahiro

        m = model.clone()
        m.set_model_sampler_post_cfg_function(mahiro)
        return io.NodeOutput(m)


class TCFG(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TCFG", display_name="Tangential Damping CFG", category=GUIDANCE,
                         description="Tangential Damping CFG (arXiv 2503.18137): the negative prediction keeps "
                                     "only its component along the direction it shares with the positive.",
                         inputs=[io.Model.Input("model")], outputs=[_model_out()])

    @classmethod
    def execute(cls, model: Any) -> io.NodeOutput:
        from ..patches.cfg import tcfg

        m = model.clone()
        m.set_model_sampler_pre_cfg_function(tcfg)
        return io.NodeOutput(m)


class FreSca(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FreSca", display_name="FreSca", category="_for_testing", is_experimental=True,
            description="Scales the guidance separately in low and high spatial frequencies.",
            inputs=[io.Model.Input("model"),
                    io.Float.Input("scale_low", default=1.0, min=0, max=10, step=0.01,
                                   tooltip="Factor for the low frequencies."),
                    io.Float.Input("scale_high", default=1.25, min=0, max=10, step=0.01,
                                   tooltip="Factor for the high frequencies."),
                    io.Int.Input("freq_cutoff", default=20, min=1, max=10000, step=1,
                                 tooltip="How many frequency indices around the centre count as low.")],
            outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, scale_low: float, scale_high: float, freq_cutoff: int) -> io.NodeOutput:
        from ..patches.cfg import fresca

        m = model.clone()
        m.set_model_sampler_pre_cfg_function(fresca(scale_low, scale_high, freq_cutoff))
        return io.NodeOutput(m)


def _layers_inputs() -> list[io.Input]:
    return [io.String.Input("double_layers", default="7, 8, 9"), io.String.Input("single_layers", default="7, 8, 9")]


def _percent(name: str, default: float) -> io.Input:
    return io.Float.Input(name, default=default, min=0.0, max=1.0, step=0.001)


class SkipLayerGuidanceDiT(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SkipLayerGuidanceDiT", category=GUIDANCE, is_experimental=True,
            description="Skip Layer Guidance for any DiT model: guidance away from a prediction made with some "
                        "blocks skipped.",
            inputs=[io.Model.Input("model"), *_layers_inputs(),
                    io.Float.Input("scale", default=3.0, min=0.0, max=10.0, step=0.1),
                    _percent("start_percent", 0.01), _percent("end_percent", 0.15),
                    io.Float.Input("rescaling_scale", default=0.0, min=0.0, max=10.0, step=0.01)],
            outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, scale: float, start_percent: float, end_percent: float, double_layers: str = "",
                single_layers: str = "", rescaling_scale: float = 0) -> io.NodeOutput:
        from ..patches.reguidance import parse_layers, skip_layer_guidance

        double, single = parse_layers(double_layers), parse_layers(single_layers)
        if not double and not single:
            return io.NodeOutput(model)
        model_sampling = model.get_model_object("model_sampling")
        m = model.clone()
        m.set_model_sampler_post_cfg_function(skip_layer_guidance(
            scale, model_sampling.percent_to_sigma(start_percent), model_sampling.percent_to_sigma(end_percent),
            double, single, rescaling_scale))
        return io.NodeOutput(m)


class SkipLayerGuidanceDiTSimple(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SkipLayerGuidanceDiTSimple", category=GUIDANCE, is_experimental=True,
            description="Skip Layer Guidance that only changes the negative pass: it runs with the blocks skipped.",
            inputs=[io.Model.Input("model"), *_layers_inputs(), _percent("start_percent", 0.0),
                    _percent("end_percent", 1.0)],
            outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, start_percent: float, end_percent: float, double_layers: str = "",
                single_layers: str = "") -> io.NodeOutput:
        from ..patches.reguidance import parse_layers, skip_layer_guidance_simple

        double, single = parse_layers(double_layers), parse_layers(single_layers)
        if not double and not single:
            return io.NodeOutput(model)
        model_sampling = model.get_model_object("model_sampling")
        m = model.clone()
        m.set_model_sampler_calc_cond_batch_function(skip_layer_guidance_simple(
            model_sampling.percent_to_sigma(start_percent), model_sampling.percent_to_sigma(end_percent),
            double, single))
        return io.NodeOutput(m)


class PerpNeg(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PerpNeg", display_name="Perp-Neg (DEPRECATED by PerpNegGuider)",
                         category="_for_testing", is_experimental=True, is_deprecated=True,
                         inputs=[io.Model.Input("model"), io.Conditioning.Input("empty_conditioning"),
                                 io.Float.Input("neg_scale", default=1.0, min=0.0, max=100.0, step=0.01)],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, empty_conditioning: list, neg_scale: float) -> io.NodeOutput:
        from ..patches.reguidance import perp_neg_cfg

        m = model.clone()
        m.set_model_sampler_cfg_function(perp_neg_cfg(empty_conditioning, neg_scale))
        return io.NodeOutput(m)


class PerpNegGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PerpNegGuider", category="_for_testing", is_experimental=True,
                         inputs=[io.Model.Input("model"), io.Conditioning.Input("positive"),
                                 io.Conditioning.Input("negative"), io.Conditioning.Input("empty_conditioning"),
                                 io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
                                 io.Float.Input("neg_scale", default=1.0, min=0.0, max=100.0, step=0.01)],
                         outputs=[io.Guider.Output()])

    @classmethod
    def execute(cls, model: Any, positive: list, negative: list, empty_conditioning: list, cfg: float,
                neg_scale: float) -> io.NodeOutput:
        from ..sampling.guiders import Guider_PerpNeg

        guider = Guider_PerpNeg(model)
        guider.set_conds(positive, negative, empty_conditioning)
        guider.set_cfg(cfg, neg_scale)
        return io.NodeOutput(guider)


class _VideoCFG:
    CATEGORY = "sampling/video_models"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",),
                             "min_cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.5,
                                                   "round": 0.01})}}

    def _cfg(self, min_cfg: float) -> Any:
        raise NotImplementedError

    def patch(self, model: Any, min_cfg: float) -> tuple[Any]:
        m = model.clone()
        m.set_model_sampler_cfg_function(self._cfg(min_cfg))
        return (m,)


class VideoLinearCFGGuidance(_VideoCFG):
    """CFG ramped linearly over the frames (batch items), from min_cfg to the sampler's cfg."""

    def _cfg(self, min_cfg: float) -> Any:
        from ..patches.cfg import video_linear_cfg

        return video_linear_cfg(min_cfg)


class VideoTriangleCFGGuidance(_VideoCFG):
    """CFG from min_cfg at the first and last frames up to the sampler's cfg in the middle."""

    def _cfg(self, min_cfg: float) -> Any:
        from ..patches.cfg import video_triangle_cfg

        return video_triangle_cfg(min_cfg)


class LatentApplyOperationCFG(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentApplyOperationCFG", category="latent/advanced/operations",
                         is_experimental=True,
                         inputs=[io.Model.Input("model"), io.LatentOperation.Input("operation")],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, operation: Any) -> io.NodeOutput:
        from ..patches.cfg import latent_operation_cfg

        m = model.clone()
        m.set_model_sampler_pre_cfg_function(latent_operation_cfg(operation))
        return io.NodeOutput(m)


NODES = [
    NodeDef("APG", APG, "Adaptive Projected Guidance", "comfy_extras.nodes_apg"),
    NodeDef("CFGZeroStar", CFGZeroStar, None, "comfy_extras.nodes_cfg"),
    NodeDef("CFGNorm", CFGNorm, None, "comfy_extras.nodes_cfg"),
    NodeDef("Mahiro", Mahiro, "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)",
            "comfy_extras.nodes_mahiro"),
    NodeDef("TCFG", TCFG, "Tangential Damping CFG", "comfy_extras.nodes_tcfg"),
    NodeDef("FreSca", FreSca, "FreSca", "comfy_extras.nodes_fresca"),
    NodeDef("SkipLayerGuidanceDiT", SkipLayerGuidanceDiT, None, "comfy_extras.nodes_slg"),
    NodeDef("SkipLayerGuidanceDiTSimple", SkipLayerGuidanceDiTSimple, None, "comfy_extras.nodes_slg"),
    NodeDef("PerpNeg", PerpNeg, "Perp-Neg (DEPRECATED by PerpNegGuider)", "comfy_extras.nodes_perpneg"),
    NodeDef("PerpNegGuider", PerpNegGuider, None, "comfy_extras.nodes_perpneg"),
    NodeDef("VideoLinearCFGGuidance", VideoLinearCFGGuidance, "VideoLinearCFGGuidance",
            "comfy_extras.nodes_video_model"),
    NodeDef("VideoTriangleCFGGuidance", VideoTriangleCFGGuidance, "VideoTriangleCFGGuidance",
            "comfy_extras.nodes_video_model"),
    NodeDef("LatentApplyOperationCFG", LatentApplyOperationCFG, None, "comfy_extras.nodes_latent"),
]
