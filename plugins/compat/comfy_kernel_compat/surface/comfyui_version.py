"""``comfyui_version``: the ComfyUI version whose API comfy-kernel implements."""

from comfy_kernel import COMFYUI_COMPAT_VERSION as __version__  # noqa: N811, F401
