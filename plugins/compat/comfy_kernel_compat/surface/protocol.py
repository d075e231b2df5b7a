"""ComfyUI's ``protocol``: the binary WebSocket frame types."""

from comfy_kernel.ws import BinaryEventTypes

__all__ = ["BinaryEventTypes"]
