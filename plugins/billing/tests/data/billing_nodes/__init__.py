"""Nodes the billing tests meter: a model loader (real safetensors files), a sleeper and an image saver."""

import json
import os
import struct
import time

from PIL import Image

from comfy_kernel.kernel import current_kernel


def _folders():
    return current_kernel().folders


class BillingLoadModel:
    """Reads a checkpoint's safetensors header and outputs its tensor count."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (_folders().list("checkpoints"),)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "load"
    CATEGORY = "billing tests"

    def load(self, ckpt_name):
        path = _folders().full_path_or_raise("checkpoints", ckpt_name)
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        return (len([k for k in header if k != "__metadata__"]),)


class BillingSleep:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -10**9, "max": 10**9}),
                             "seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 600.0, "step": 0.01})},
                "optional": {"model": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "billing tests"

    def run(self, value, seconds, model=None):
        time.sleep(seconds)
        return (value,)


class BillingImage:
    """Saves ``batch_size`` PNGs of ``width`` x ``height`` to the output folder and shows them."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -10**9, "max": 10**9}),
                             "width": ("INT", {"default": 8, "min": 1, "max": 16384}),
                             "height": ("INT", {"default": 8, "min": 1, "max": 16384}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 64})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "billing tests"

    def save(self, value, width, height, batch_size):
        out_dir = current_kernel().dirs.output
        os.makedirs(out_dir, exist_ok=True)
        images = []
        for i in range(batch_size):
            name = f"billing_{value}_{time.time_ns()}_{i}.png"
            Image.new("RGB", (width, height), (value % 256, i * 40 % 256, 99)).save(os.path.join(out_dir, name))
            images.append({"filename": name, "subfolder": "", "type": "output"})
        return {"ui": {"images": images}}


NODE_CLASS_MAPPINGS = {"BillingLoadModel": BillingLoadModel, "BillingSleep": BillingSleep,
                       "BillingImage": BillingImage}
