"""``comfy_api.latest.ui``: result helpers of V3 nodes (the kernel's ``io.ui``)."""

from comfy_kernel.nodes.io import ui as _ui

globals().update({name: value for name, value in vars(_ui).items() if not name.startswith("__")})
