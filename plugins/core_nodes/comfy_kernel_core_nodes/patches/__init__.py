"""The maths of the model-patching nodes, as the functions they register on a MODEL.

Each function here builds a patch for one of ComfyUI's patch points and is
registered by its node on a clone (``set_model_sampler_cfg_function``,
``set_model_sampler_pre_cfg_function`` / ``post_cfg_function``, block and
attention patches). The patch points call them with ComfyUI's argument dicts,
so they also work on models and guiders of node packs.

- :mod:`.cfg`            guidance formulas: RescaleCFG, CFG-Zero*, CFGNorm, APG, Mahiro, TCFG, FreSca, ...
- :mod:`.reguidance`     guidance that evaluates the model again: PAG, SAG, SLG, Perp-Neg
- :mod:`.unet`           UNet block and attention patches: FreeU, Deep Shrink, HyperTile, ToMe
- :mod:`.denoise_mask`   Differential Diffusion's per-step inpainting mask
- :mod:`.compile`        torch.compile of the diffusion model as an apply_model wrapper
"""
