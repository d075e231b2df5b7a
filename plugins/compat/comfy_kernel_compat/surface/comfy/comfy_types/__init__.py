"""ComfyUI's ``comfy.comfy_types``: type names and node typing helpers."""

from .node_typing import *  # noqa: F403
from .node_typing import __all__  # noqa: F401
