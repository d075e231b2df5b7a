"""SAMPLER nodes of samplers that KSampler does not list: LCM with upscaling or a noise schedule, Euler CFG++."""

from __future__ import annotations

from comfy_kernel.nodes import io

from .common import NodeDef

MODULE = "comfy_extras.nodes_advanced_samplers"


class SamplerLCMUpscale(io.ComfyNode):
    UPSCALE_METHODS = ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SamplerLCMUpscale", category="sampling/custom_sampling/samplers",
            inputs=[io.Float.Input("scale_ratio", default=1.0, min=0.1, max=20.0, step=0.01),
                    io.Int.Input("scale_steps", default=-1, min=-1, max=1000, step=1),
                    io.Combo.Input("upscale_method", options=cls.UPSCALE_METHODS)],
            outputs=[io.Sampler.Output()])

    @classmethod
    def execute(cls, scale_ratio: float, scale_steps: int, upscale_method: str) -> io.NodeOutput:
        """LCM that enlarges its latent by ``scale_ratio`` over ``scale_steps`` steps (-1: about half of them)."""
        from ..sampling.ksampler import KSAMPLER
        from ..sampling.samplers_advanced import sample_lcm_upscale

        options = {"total_upscale": scale_ratio, "upscale_steps": None if scale_steps < 0 else scale_steps,
                   "upscale_method": upscale_method}
        return io.NodeOutput(KSAMPLER(sample_lcm_upscale, extra_options=options))


class SamplerEulerCFGpp(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="SamplerEulerCFGpp", display_name="SamplerEulerCFG++", category="_for_testing",
                         inputs=[io.Combo.Input("version", options=["regular", "alternative"])],
                         outputs=[io.Sampler.Output()], is_experimental=True)

    @classmethod
    def execute(cls, version: str) -> io.NodeOutput:
        """``regular`` is KSampler's euler_cfg_pp; ``alternative`` the variant stepping from the x0 estimate."""
        from ..sampling.ksampler import KSAMPLER, ksampler
        from ..sampling.samplers_advanced import sample_euler_pp

        sampler = KSAMPLER(sample_euler_pp) if version == "alternative" else ksampler("euler_cfg_pp")
        return io.NodeOutput(sampler)


class SamplerLCM(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SamplerLCM", category="model/sampling/samplers",
            inputs=[io.Float.Input("s_noise", default=1.0, min=0.0, max=64.0, step=0.01,
                                   tooltip="Multiplier of the fresh noise at the first step (1: the size the model "
                                           "was trained with)."),
                    io.Float.Input("s_noise_end", default=1.0, min=0.0, max=64.0, step=0.01,
                                   tooltip="Multiplier at the last step; equal to s_noise for a constant one."),
                    io.Float.Input("noise_clip_std", default=0.0, min=0.0, max=10.0, step=0.01,
                                   tooltip="Clamp the fresh noise to +/- this many standard deviations (0: off).")],
            outputs=[io.Sampler.Output()])

    @classmethod
    def execute(cls, s_noise: float, s_noise_end: float, noise_clip_std: float) -> io.NodeOutput:
        """LCM whose re-noising is scaled from ``s_noise`` to ``s_noise_end`` over the steps."""
        from ..sampling.ksampler import ksampler

        return io.NodeOutput(ksampler("lcm", {"s_noise": float(s_noise), "s_noise_end": float(s_noise_end),
                                              "noise_clip_std": float(noise_clip_std)}))


NODES = [
    NodeDef("SamplerLCMUpscale", SamplerLCMUpscale, None, MODULE),
    NodeDef("SamplerEulerCFGpp", SamplerEulerCFGpp, "SamplerEulerCFG++", MODULE),
    NodeDef("SamplerLCM", SamplerLCM, None, MODULE),
]
