"""ComfyUI's core nodes for comfy-kernel, backed by a pure PyTorch Stable Diffusion implementation."""
