"""The model object API, family-independent and in ComfyUI's shapes (node packs rely on them).

- :mod:`.patcher`  ModelPatcher: MODEL's options, weight and object patches, loading through the kernel
- :mod:`.base`     BaseModel (apply_model, extra_conds), WeightsSource, ModelType
- :mod:`.clip`     CLIP (tokenize, encode_from_tokens) and :mod:`.vae` VAE (encode, decode, tiled)
- :mod:`.model_sampling`, :mod:`.latent_formats`, :mod:`.conds`: schedules, latent scales, network inputs
- :mod:`.weights`, :mod:`.lora`: weight patches and LoRA key maps
- :mod:`.detection`, :mod:`.loading`: which family a file holds, and the loaders
- :mod:`.attention`, :mod:`.ops`, :mod:`.extension`: attention, cast layers, wrappers and callbacks
"""
