"""ComfyUI's ``comfy_extras``: node classes of ComfyUI's extra modules, by name from the registry.

``from comfy_extras.nodes_mask import SolidMask`` works when a plugin
registered ``SolidMask``; the module a node lived in upstream does not matter.
"""
