"""ComfyUI's ``comfy.ldm.modules.attention``: ``optimized_attention`` and the SD transformer blocks.

Every attention backend name ComfyUI exposes is core_nodes' one attention
function (PyTorch's scaled-dot-product attention), which is what ComfyUI
picks too on current PyTorch; ``CrossAttention``, ``BasicTransformerBlock``
and ``SpatialTransformer`` are the SD UNet's own classes.
"""

from typing import Any

from comfy_kernel_compat.reexport import reexport, stand_ins

reexport(globals(), ["model.attention", "families.sd.unet"])

attention_basic = attention_split = attention_sub_quad = attention_xformers = attention_sage = \
    globals()["optimized_attention"]
Linear = globals()["torch"].nn.Linear


SAGE_ATTENTION_IS_AVAILABLE = False
FLASH_ATTENTION_IS_AVAILABLE = False
BROKEN_XFORMERS = False
REGISTERED_ATTENTION_FUNCTIONS: dict[str, Any] = {}
attention_flash = globals()["optimized_attention"]


def exists(val: Any) -> bool:
    return val is not None


def default(val: Any, d: Any) -> Any:
    if val is not None:
        return val
    return d() if callable(d) else d


def get_attn_precision(attn_precision: Any, current_dtype: Any = None) -> Any:
    return attn_precision


def Normalize(in_channels: int, dtype: Any = None, device: Any = None) -> Any:  # noqa: N802 - ComfyUI's name
    import torch

    return torch.nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True, dtype=dtype,
                              device=device)


def wrap_attn(func: Any) -> Any:
    """ComfyUI's hook for attention overrides; attention here is not overridable, so the function is unchanged."""
    return func


def register_attention_function(name: str, func: Any) -> None:
    """Accepted and ignored: every attention call uses PyTorch's scaled-dot-product attention."""


def get_attention_function(name: str, default: Any = None) -> Any:
    return globals()["optimized_attention"] if default is None else default

stand_ins(globals(), globals()["SpatialTransformer"], ["SpatialVideoTransformer"],
          "video (SVD) transformers are not part of the SD family here")
