"""ComfyUI's ``comfy_api``: the V3 node API (``comfy_api.latest``, pinned ``v0_0_2``)."""
