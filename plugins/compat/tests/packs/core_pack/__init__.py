"""A pack that builds on core nodes: subclasses them and reads the live node registry."""

import nodes
from nodes import EmptyImage, SaveImage


class CoreTeal(EmptyImage):
    CATEGORY = "core_pack"
    FUNCTION = "teal"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"size": ("INT", {"default": 8, "min": 1, "max": nodes.MAX_RESOLUTION})}}

    def teal(self, size):
        return self.generate(size, size, 1, 0x008080)


class CoreSave(SaveImage):
    CATEGORY = "core_pack"


class CoreCount:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ()
    FUNCTION = "count"
    OUTPUT_NODE = True
    CATEGORY = "core_pack"

    def count(self):
        names = list(nodes.NODE_CLASS_MAPPINGS)
        return {"ui": {"names": names, "ksampler_display": [nodes.NODE_DISPLAY_NAME_MAPPINGS.get("KSampler")]}}


class CoreLate:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "core_pack"

    def run(self):
        return (1,)


class FakeKSampler(CoreLate):
    pass


NODE_CLASS_MAPPINGS = {"CoreTeal": CoreTeal, "CoreSave": CoreSave, "CoreCount": CoreCount}

# Some packs write into the live mappings at import time.
nodes.NODE_CLASS_MAPPINGS["CoreLateAdded"] = CoreLate
nodes.NODE_DISPLAY_NAME_MAPPINGS["CoreLateAdded"] = "Core Late"
nodes.NODE_CLASS_MAPPINGS["KSampler"] = FakeKSampler  # a core name: ignored
