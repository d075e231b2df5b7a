"""A pack that needs a model family comfy-kernel does not implement: it must fail alone, by name."""

from comfy.ldm.not_a_family.model import Transformer  # noqa: F401

NODE_CLASS_MAPPINGS = {}
