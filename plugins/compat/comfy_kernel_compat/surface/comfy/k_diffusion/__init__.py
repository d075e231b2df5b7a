"""ComfyUI's ``comfy.k_diffusion``: the samplers of the core_nodes plugin under k-diffusion names."""
