"""ComfyUI's ``comfy.sample``: core_nodes' ``sample``, ``sample_custom``, ``prepare_noise``."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["sampling.noise", "sampling.guider", "sampling.sample"])

from comfy.sampler_helpers import cleanup_additional_models, prepare_sampling  # noqa: E402,F401
