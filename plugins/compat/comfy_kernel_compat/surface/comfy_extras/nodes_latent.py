"""``comfy_extras.nodes_latent``: node classes resolved by name from the kernel's registry."""

from comfy_kernel_compat.extras import node_class_getattr

__getattr__ = node_class_getattr(__name__)
