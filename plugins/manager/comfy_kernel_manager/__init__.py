"""comfy-kernel's manager plugin: the ComfyUI-Manager API, with node packs as pip packages."""

__version__ = "0.1.0"
# The ComfyUI-Manager API version this plugin answers to (see /manager/version).
MANAGER_API_VERSION = "V3.32.3"
