"""ComfyUI's ``comfy_execution`` package on comfy-kernel's executor."""
