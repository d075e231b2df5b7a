"""ComfyUI's ``comfy`` package, mapped onto comfy-kernel.

Submodules are thin: ``comfy.utils`` and ``comfy.model_management`` wrap the
kernel's progress and GPU scheduler; ``comfy.samplers``/``comfy.sample``/
``comfy.sd`` expose what the core_nodes plugin implements.
"""
