"""ComfyUI's ``comfy.ldm.flux.math``: rotary positions and attention of core_nodes' Flux family.

The rotation tables have ComfyUI's layout ([..., tokens, dim/2, 2, 2]), so a
pack's own attention (a patched Flux or Wan block) can rotate with them.
ComfyUI's ``apply_rope`` rotates queries and keys together; ``apply_rope1``
rotates one tensor (core_nodes' ``apply_rope``).
"""

from typing import Any

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["families.flux.layers"])

apply_rope1 = globals()["apply_rope"]


def apply_rope(xq: Any, xk: Any, freqs_cis: Any) -> tuple[Any, Any]:
    return apply_rope1(xq, freqs_cis), apply_rope1(xk, freqs_cis)
