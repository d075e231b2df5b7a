"""ComfyUI's ``openaimodel``: core_nodes' SD UNet (``UNetModel``) and its blocks.

ComfyUI's ``TimestepEmbedSequential`` (a block whose parts get the time
embedding, context or skip size as they need) is core_nodes' ``TimestepBlock``;
ComfyUI's own ``TimestepBlock`` is the kind of layer that takes the embedding,
core_nodes' ``ResBlock``. ``forward_timestep_embed`` runs a block as the UNet does.
"""

from typing import Any

from comfy_kernel_compat.reexport import reexport, stand_ins

reexport(globals(), ["families.sd.unet"])

TimestepEmbedSequential = globals()["TimestepBlock"]
TimestepBlock = globals()["ResBlock"]
stand_ins(globals(), globals()["ResBlock"], ["VideoResBlock"], "video (SVD) blocks are not part of the SD family here")
stand_ins(globals(), globals()["torch"].nn.Module, ["Timestep"], "the UNet embeds timesteps itself")


def forward_timestep_embed(ts: Any, x: Any, emb: Any, context: Any = None, transformer_options: dict | None = None,
                           output_shape: Any = None, time_context: Any = None, num_video_frames: Any = None,
                           image_only_indicator: Any = None) -> Any:
    up_size = tuple(output_shape[-2:]) if output_shape is not None else None
    return TimestepEmbedSequential.forward(ts, x, emb, context, transformer_options if transformer_options is not None
                                           else {}, up_size)
