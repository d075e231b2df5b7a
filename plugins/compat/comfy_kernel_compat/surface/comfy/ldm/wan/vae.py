"""ComfyUI's ``comfy.ldm.wan.vae``: core_nodes' causal video autoencoder (Wan 2.1; ``WanVAE``).

``RMS_norm`` is core_nodes' channel RMS norm (``RMSNorm``; ``images`` by keyword).
``CausalConv3d`` is built as ComfyUI builds it (``in, out, kernel, stride,
padding``), and every causal 3-d convolution of a loaded Wan VAE counts as
one in ``isinstance`` (core_nodes makes their classes per weight-casting
layer set), which is how packs find the layers to patch.
"""

from typing import Any

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["components.wan_vae"], aliases={"RMS_norm": "RMSNorm"})

_CausalConv = globals()["CausalConv"]
_Conv3d = globals()["nn"].Conv3d


class _AnyCausalConv(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        if cls is CausalConv3d:
            return isinstance(obj, _CausalConv) and isinstance(obj, _Conv3d)
        return super().__instancecheck__(obj)


class CausalConv3d(_CausalConv, _Conv3d, metaclass=_AnyCausalConv):
    """A Conv3d padded in time on the past side only (``2 * padding`` frames), in space on both sides."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, **kwargs)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.time_pad, self.space_pad = 2 * pt, (pw, pw, ph, ph)
