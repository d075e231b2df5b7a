"""ComfyUI's ``comfy.diffusers_convert``: importable; the diffusers-layout state-dict converters are not provided.

comfy-kernel reads diffusers folders by renaming keys as it loads them
(``comfy.diffusers_load``, DiffusersLoader), not by converting state dicts.
Packs import this module at start-up and call its converters only from nodes
that convert diffusers weights themselves; such a call fails with an
AttributeError naming the missing function.
"""

from comfy_kernel_compat.reexport import missing_getattr

__getattr__ = missing_getattr(__name__, " (diffusers-format model folders are not supported)")
