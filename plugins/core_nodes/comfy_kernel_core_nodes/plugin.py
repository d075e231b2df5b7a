"""Entry point of the core_nodes plugin: registers ComfyUI's core nodes with the kernel."""
