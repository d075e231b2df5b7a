"""``comfy_api.latest.io``: the kernel's V3 node module under ComfyUI's name.

The module object is the kernel's own (``sys.modules`` aliases it), so
``from comfy_api.latest.io import ComfyNode`` and ``io.ComfyNode`` are one class.
"""

import sys

from comfy_kernel.nodes import io as _io

sys.modules[__name__] = _io
