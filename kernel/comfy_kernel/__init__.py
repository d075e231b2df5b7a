"""comfy-kernel: a microkernel server that speaks the ComfyUI API.

The kernel holds the plugin host, the HTTP/WebSocket server, the file and
model-folder registry, the node registry, the executor and the queue. Every
feature area is a plugin (see :mod:`comfy_kernel.hookspecs`).
"""

from .hookspecs import hookimpl

__version__ = "0.1.0"
#: The ComfyUI version whose API this kernel speaks (reported by /system_stats).
COMFYUI_COMPAT_VERSION = "0.3.64"

__all__ = ["hookimpl", "__version__", "COMFYUI_COMPAT_VERSION"]
