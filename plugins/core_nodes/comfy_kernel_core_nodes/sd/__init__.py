"""Stable Diffusion model code in plain PyTorch: checkpoint loading, tokenizer, text encoder, UNet and VAE.

Nothing here depends on the server kernel, so the models can be used and tested
on their own, on any torch device. The entry points the nodes use:

- checkpoint.load_checkpoint(path, device, dtype) -> Checkpoint with .unet, .vae, .clip
  (and read_state_dict / split_state_dict / derive_unet_config / build_* for parts)
- clip_text.encode_prompt(clip, text, layer_idx, embedding_dir) -> (cond [1, 77k, 768], pooled [1, 768])
- unet.predict_noise / unet.denoise(unet, x, sigma, context): one model evaluation at noise level sigma
- model_sampling: the SD1.x sigma table and sigma <-> timestep conversion
- vae.encode / vae.decode and vae.encode_tiled / vae.decode_tiled on ComfyUI IMAGE and raw latent tensors
"""
