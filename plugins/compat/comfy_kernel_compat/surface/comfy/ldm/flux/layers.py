"""ComfyUI's ``comfy.ldm.flux.layers``: core_nodes' Flux blocks (``DoubleStreamBlock``, ``SingleStreamBlock``,
``LastLayer``, ``MLPEmbedder``, ``Modulation``, ``timestep_embedding`` ...); ``EmbedND`` computes the
rotary tables of token ids as the Flux model does."""

from typing import Any

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["families.flux.layers"])


class EmbedND(globals()["nn"].Module):
    """Rotary tables [B, 1, tokens, dim/2, 2, 2] of token ids [B, tokens, axes]."""

    def __init__(self, dim: int, theta: float, axes_dim: list[int]) -> None:
        super().__init__()
        self.dim, self.theta, self.axes_dim = dim, theta, list(axes_dim)

    def forward(self, ids: Any) -> Any:
        return position_embedding(ids, tuple(self.axes_dim), self.theta)  # noqa: F821 - re-exported above
