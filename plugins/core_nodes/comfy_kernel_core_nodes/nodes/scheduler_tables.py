"""Schedulers built from published sigma tables: Align Your Steps, GITS and OptimalSteps.

Each table gives the sigmas of one step count; other counts are interpolated
log-linearly. With denoise < 1 only the last ``round(steps * denoise)`` steps
are kept, and the final sigma is always 0.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

CATEGORY = "sampling/custom_sampling/schedulers"


def _schedule(levels: list[float], steps: int, denoise: float) -> Any:
    import torch

    from ..sampling.noise_levels import loglinear_interp

    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = round(steps * denoise)
    sigmas = levels[:] if steps + 1 == len(levels) else loglinear_interp(levels, steps + 1)
    sigmas = sigmas[-(total + 1):]
    sigmas[-1] = 0
    return torch.FloatTensor(sigmas)


def _denoise() -> io.Input:
    return io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01)


class AlignYourStepsScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="AlignYourStepsScheduler", category=CATEGORY,
                         inputs=[io.Combo.Input("model_type", options=["SD1", "SDXL", "SVD"]),
                                 io.Int.Input("steps", default=10, min=1, max=10000), _denoise()],
                         outputs=[io.Sigmas.Output()])

    @classmethod
    def execute(cls, model_type: str, steps: int, denoise: float) -> io.NodeOutput:
        from ..sampling.noise_levels import ALIGN_YOUR_STEPS

        return io.NodeOutput(_schedule(ALIGN_YOUR_STEPS[model_type], steps, denoise))


class GITSScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="GITSScheduler", category=CATEGORY,
                         inputs=[io.Float.Input("coeff", default=1.20, min=0.80, max=1.50, step=0.05),
                                 io.Int.Input("steps", default=10, min=2, max=1000), _denoise()],
                         outputs=[io.Sigmas.Output()])

    @classmethod
    def execute(cls, coeff: float, steps: int, denoise: float) -> io.NodeOutput:
        """The table of ``coeff`` (rounded to 0.05's grid): its own schedule up to 20 steps, else the 20-step one
        interpolated."""
        from ..sampling.noise_levels import GITS

        table = GITS[round(coeff, 2)]
        levels = table[steps - 2] if steps <= 20 else table[-1]
        return io.NodeOutput(_schedule(levels, steps, denoise))


class OptimalStepsScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="OptimalStepsScheduler", category=CATEGORY,
                         inputs=[io.Combo.Input("model_type", options=["FLUX", "Wan", "Chroma"]),
                                 io.Int.Input("steps", default=20, min=3, max=1000), _denoise()],
                         outputs=[io.Sigmas.Output()])

    @classmethod
    def execute(cls, model_type: str, steps: int, denoise: float) -> io.NodeOutput:
        from ..sampling.noise_levels import OPTIMAL_STEPS

        return io.NodeOutput(_schedule(OPTIMAL_STEPS[model_type], steps, denoise))


NODES = [
    NodeDef("AlignYourStepsScheduler", AlignYourStepsScheduler, None, "comfy_extras.nodes_align_your_steps"),
    NodeDef("GITSScheduler", GITSScheduler, None, "comfy_extras.nodes_gits"),
    NodeDef("OptimalStepsScheduler", OptimalStepsScheduler, None, "comfy_extras.nodes_optimalsteps"),
]
