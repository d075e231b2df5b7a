"""A pack whose module-level import needs the LTX-Video family, which comfy-kernel does not implement."""

from comfy.ldm.lightricks.vae.causal_conv3d import CausalConv3d  # noqa: F401

NODE_CLASS_MAPPINGS = {}
