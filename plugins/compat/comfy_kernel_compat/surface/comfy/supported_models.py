"""ComfyUI's ``comfy.supported_models``: the model configurations of core_nodes' families.

``SD15``, ``SD20``, ``SDXL``, ``SDXLRefiner`` ... are the families' own config
classes, so ``isinstance(model.model.model_config, comfy.supported_models.SDXL)``
works; ``models`` lists every configuration detection tries.
"""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.detection"], optional=["families.sd.models", "families.flux.models",
                                                  "families.sd3.models", "families.qwen_image.models",
                                                  "families.lumina2.models"])

globals()["load_families"]()
models = list(globals()["MODEL_CONFIGS"])
