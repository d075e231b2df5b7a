"""Nodes for the integration tests (run-and-wait, events, webhooks, the client): files and previews, no torch.

Loaded into a test server by copying this folder into ``<base>/custom_nodes``
(see ``tests/e2e/integration_helpers.py``).
"""

from __future__ import annotations

import itertools
import os
import time

from PIL import Image

from comfy_kernel.kernel import current_kernel
from comfy_kernel.progress import ProgressBar

_counter = itertools.count(1)


class TestWriteImage:
    """Output node: writes a small PNG of one grey level into the output folder and lists it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 128, "min": 0, "max": 255}),
                             "prefix": ("STRING", {"default": "integration"})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value, prefix):
        kernel = current_kernel()
        folder = os.path.join(kernel.dirs.output, "tests")
        os.makedirs(folder, exist_ok=True)
        name = f"{prefix}_{value}_{os.getpid()}_{next(_counter):05d}.png"
        Image.new("RGB", (8, 8), (value, value, value)).save(os.path.join(folder, name))
        return {"ui": {"images": [{"filename": name, "subfolder": "tests", "type": "output"}]}}


class TestPreviewSteps:
    """Reports ``steps`` progress updates, each with a preview image; sleeps ``delay`` per step."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0}), "steps": ("INT", {"default": 3}),
                             "delay": ("FLOAT", {"default": 0.0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, steps, delay):
        bar = ProgressBar(steps)
        for step in range(steps):
            if delay:
                time.sleep(delay)
            shade = int(255 * (step + 1) / steps)
            bar.update_absolute(step + 1, steps, ("JPEG", Image.new("RGB", (16, 16), (shade, 0, 0)), None))
        return (value,)


NODE_CLASS_MAPPINGS = {"TestWriteImage": TestWriteImage, "TestPreviewSteps": TestPreviewSteps}
