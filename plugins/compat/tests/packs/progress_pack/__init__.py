"""Progress and interrupts: comfy.utils.ProgressBar and comfy.model_management checkpoints."""

import time

import comfy.model_management
import comfy.utils


class SlowCounter:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1}),
                             "delay": ("FLOAT", {"default": 0.0, "min": 0.0, "step": 0.01})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "count"
    OUTPUT_NODE = True
    CATEGORY = "progress_pack"

    def count(self, steps, delay):
        pbar = comfy.utils.ProgressBar(steps)
        done = 0
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(delay)
            done += 1
            pbar.update(1)
        device = comfy.model_management.get_torch_device()
        return {"ui": {"count": [done], "device": [device.type]}, "result": (done,)}


NODE_CLASS_MAPPINGS = {"SlowCounter": SlowCounter}
