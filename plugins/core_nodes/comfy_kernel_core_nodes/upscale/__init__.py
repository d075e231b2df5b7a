"""Upscale models (UPSCALE_MODEL) through spandrel, held by the kernel's model manager.

- :mod:`.spandrel_import` imports spandrel on a torch without torchvision
  (spandrel imports torchvision for two architectures only);
- :mod:`.model` the UPSCALE_MODEL value, its loading and the tiled,
  out-of-memory-tolerant upscale of ImageUpscaleWithModel.

Importing this package imports neither torch nor spandrel.
"""
