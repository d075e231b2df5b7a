"""Context-window nodes: a MODEL that samples long latents window by window.

Both nodes clone the MODEL and store a handler from sampling/context_windows.py
as ``model_options["context_handler"]``; the guidance's ``calc_cond_batch``
consults it at every evaluation. The Wan node takes its lengths in video frames
and converts them to Wan's latent frames (4 video frames each, the first alone).

ContextWindowsManual has the inputs current ComfyUI gives it (FreeNoise, retained
indices, split conditioning, the causal anchor frame), because the frontend's
Wan Animate templates send them; WanContextWindowsManual is 0.3.64's.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import MAX_RESOLUTION, NodeDef

CATEGORY = "context"
MANUAL_CATEGORY = "model/patch"
MODULE = "comfy_extras.nodes_context_windows"
SCHEDULES = ["standard_static", "standard_uniform", "looped_uniform", "batched"]
FUSE_METHODS = ["pyramid", "relative", "flat", "overlap-linear"]
MODEL_TIP = "The model to apply context windows to during sampling."


def _shared_inputs(schedule_default: str | None = None) -> list[io.Input]:
    """The inputs after the lengths, common to both nodes."""
    return [
        io.Combo.Input("context_schedule", options=SCHEDULES, default=schedule_default,
                       tooltip="How the windows are placed at each step."),
        io.Int.Input("context_stride", min=1, default=1,
                     tooltip="Largest spacing between a window's frames; uniform schedules only."),
        io.Boolean.Input("closed_loop", default=False,
                         tooltip="Let windows wrap from the last frame to the first; looped schedule only."),
        io.Combo.Input("fuse_method", options=FUSE_METHODS, default="pyramid",
                       tooltip="How overlapping windows' predictions are weighted."),
    ]


def _patched(model: Any, context_length: int, context_overlap: int, context_schedule: str, context_stride: int,
             closed_loop: bool, fuse_method: str, dim: int, **options: Any) -> Any:
    from ..sampling.context_windows import IndexListContextHandler, attach

    handler = IndexListContextHandler(context_schedule, fuse_method, context_length=context_length,
                                      context_overlap=context_overlap, context_stride=context_stride,
                                      closed_loop=closed_loop, dim=dim, **options)
    return attach(model, handler)


class ContextWindowsManual(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ContextWindowsManual", display_name="Context Windows (Manual)", category=MANUAL_CATEGORY,
            description="Evaluate the model on overlapping windows of a long latent.", is_experimental=True,
            inputs=[io.Model.Input("model", tooltip=MODEL_TIP),
                    io.Int.Input("context_length", min=1, default=16, tooltip="Positions per window."),
                    io.Int.Input("context_overlap", min=0, default=4, tooltip="Positions shared by neighbours."),
                    *_shared_inputs("standard_static"),
                    io.Int.Input("dim", min=0, max=5, default=0, tooltip="The latent dimension to window."),
                    io.Boolean.Input("freenoise", default=False,
                                     tooltip="Reuse earlier frames' noise, reordered, for later windows."),
                    io.String.Input("cond_retain_index_list", default="",
                                    tooltip="Window positions (comma separated) that keep the conditioning of "
                                            "the same positions of the whole latent, e.g. 0 for a start image."),
                    io.Boolean.Input("split_conds_to_windows", default=False,
                                     tooltip="Give each window the combined conditioning of its region."),
                    io.String.Input("latent_retain_index_list", default="",
                                    tooltip="Window positions that keep the latent of the same positions."),
                    io.Boolean.Input("causal_window_fix", default=True,
                                     tooltip="Evaluate each window with the frame before it, then drop it.")],
            outputs=[io.Model.Output(tooltip="The model, sampling in context windows.")])

    @classmethod
    def execute(cls, model: Any, context_length: int, context_overlap: int, context_schedule: str,
                context_stride: int, closed_loop: bool, fuse_method: str, dim: int, freenoise: bool = False,
                cond_retain_index_list: str = "", split_conds_to_windows: bool = False,
                latent_retain_index_list: str = "", causal_window_fix: bool = True) -> io.NodeOutput:
        return io.NodeOutput(_patched(model, context_length, context_overlap, context_schedule, context_stride,
                                      closed_loop, fuse_method, dim, freenoise=freenoise,
                                      cond_retain_index_list=cond_retain_index_list,
                                      split_conds_to_windows=split_conds_to_windows,
                                      latent_retain_index_list=latent_retain_index_list,
                                      causal_window_fix=causal_window_fix))


class WanContextWindowsManual(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanContextWindowsManual", display_name="WAN Context Windows (Manual)", category=CATEGORY,
            description="Context windows over a Wan video latent's frames (dim 2).", is_experimental=True,
            inputs=[io.Model.Input("model", tooltip=MODEL_TIP),
                    io.Int.Input("context_length", min=1, max=MAX_RESOLUTION, step=4, default=81,
                                 tooltip="Video frames per window."),
                    io.Int.Input("context_overlap", min=0, default=30, tooltip="Video frames shared by neighbours."),
                    *_shared_inputs()],
            outputs=[io.Model.Output(tooltip="The model, sampling in context windows.")])

    @classmethod
    def execute(cls, model: Any, context_length: int, context_overlap: int, context_schedule: str,
                context_stride: int, closed_loop: bool, fuse_method: str) -> io.NodeOutput:
        length = max((context_length - 1) // 4 + 1, 1)
        overlap = max((context_overlap - 1) // 4 + 1, 0)
        return io.NodeOutput(_patched(model, length, overlap, context_schedule, context_stride, closed_loop,
                                      fuse_method, 2))


NODES = [
    NodeDef("ContextWindowsManual", ContextWindowsManual, "Context Windows (Manual)", MODULE),
    NodeDef("WanContextWindowsManual", WanContextWindowsManual, "WAN Context Windows (Manual)", MODULE),
]
