"""ComfyUI compatibility for comfy-kernel.

Node packs written for ComfyUI import ComfyUI's own modules (``folder_paths``,
``nodes``, ``server``, ``comfy.*``, ``comfy_execution.*``, ``comfy_api.*`` ...).
This plugin answers those imports with thin modules kept in ``surface/`` that
delegate to the running kernel, through an import hook (:mod:`.finder`) rather
than top-level packages in site-packages, so nothing named ``server`` or
``nodes`` exists for other programs in the environment.
"""

__version__ = "0.1.0"
