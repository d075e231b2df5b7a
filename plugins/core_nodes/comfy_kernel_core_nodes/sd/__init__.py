"""Stable Diffusion model code in plain PyTorch: checkpoint loading, tokenizer, text encoder, UNet and VAE.

Nothing here depends on the server kernel, so the models can be used and tested on their own.
"""
