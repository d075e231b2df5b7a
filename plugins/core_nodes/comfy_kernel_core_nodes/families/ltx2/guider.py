"""LTXVDualCFGGuider (ComfyUI's comfy_extras.nodes_lt): one guidance scale for the video, another for the audio.

The guider itself is in ``dual_cfg.py``.
"""

from __future__ import annotations

from comfy_kernel.nodes import io


class LTXVDualCFGGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVDualCFGGuider", display_name="LTXV Dual CFG Guider",
                         category="model/sampling/guiders",
                         description="Guidance scales of their own for the video and the audio of an LTX-2 latent.",
                         inputs=[io.Model.Input("model"), io.Conditioning.Input("positive"),
                                 io.Conditioning.Input("negative"),
                                 io.Float.Input("video_cfg", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01),
                                 io.Float.Input("audio_cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01)],
                         outputs=[io.Guider.Output()])

    @classmethod
    def execute(cls, model, positive, negative, video_cfg: float, audio_cfg: float) -> io.NodeOutput:
        from .dual_cfg import DualCFGGuider

        guider = DualCFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(video_cfg, audio_cfg)
        return io.NodeOutput(guider)
