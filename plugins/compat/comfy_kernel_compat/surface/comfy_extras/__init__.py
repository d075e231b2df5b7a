"""ComfyUI's ``comfy_extras``: each ``nodes_*`` module holds the core nodes that declare it.

``from comfy_extras.nodes_mask import SolidMask, composite`` returns core_nodes'
class and helper (see :mod:`comfy_kernel_compat.extras`).
"""

from comfy_kernel_compat.extras import module_getattr as __getattr__  # noqa: F401
