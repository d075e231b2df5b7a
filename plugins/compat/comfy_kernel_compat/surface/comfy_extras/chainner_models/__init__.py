"""ComfyUI's deprecated ``comfy_extras.chainner_models``: upscale model loading, now spandrel's."""
