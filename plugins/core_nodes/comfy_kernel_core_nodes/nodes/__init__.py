"""ComfyUI's core nodes, grouped by what they work on.

Importing this package (and its node modules) does not import torch: every
node imports torch and the model code inside its function, so the server's
start-up and ``/object_info`` stay light.
"""

from __future__ import annotations

from . import conditioning, image, ksampler, latent, loaders, lora, save, utility, vae

#: (name, class, display name) in the order ComfyUI lists its core nodes.
NODES: list[tuple[str, type, str]] = [
    ("KSampler", ksampler.KSampler, "KSampler"),
    ("CheckpointLoaderSimple", loaders.CheckpointLoaderSimple, "Load Checkpoint"),
    ("CLIPTextEncode", conditioning.CLIPTextEncode, "CLIP Text Encode (Prompt)"),
    ("CLIPSetLastLayer", conditioning.CLIPSetLastLayer, "CLIP Set Last Layer"),
    ("VAEDecode", vae.VAEDecode, "VAE Decode"),
    ("VAEEncode", vae.VAEEncode, "VAE Encode"),
    ("VAEEncodeForInpaint", vae.VAEEncodeForInpaint, "VAE Encode (for Inpainting)"),
    ("VAELoader", loaders.VAELoader, "Load VAE"),
    ("EmptyLatentImage", latent.EmptyLatentImage, "Empty Latent Image"),
    ("LatentUpscale", latent.LatentUpscale, "Upscale Latent"),
    ("LatentUpscaleBy", latent.LatentUpscaleBy, "Upscale Latent By"),
    ("LatentFromBatch", latent.LatentFromBatch, "Latent From Batch"),
    ("RepeatLatentBatch", latent.RepeatLatentBatch, "Repeat Latent Batch"),
    ("SaveImage", save.SaveImage, "Save Image"),
    ("PreviewImage", save.PreviewImage, "Preview Image"),
    ("LoadImage", image.LoadImage, "Load Image"),
    ("LoadImageMask", image.LoadImageMask, "Load Image (as Mask)"),
    ("ImageScale", image.ImageScale, "Upscale Image"),
    ("ImageScaleBy", image.ImageScaleBy, "Upscale Image By"),
    ("ImageInvert", image.ImageInvert, "Invert Image"),
    ("ImageBatch", image.ImageBatch, "Batch Images"),
    ("ImagePadForOutpaint", image.ImagePadForOutpaint, "Pad Image for Outpainting"),
    ("EmptyImage", image.EmptyImage, "EmptyImage"),
    ("ConditioningAverage", conditioning.ConditioningAverage, "Conditioning (Average)"),
    ("ConditioningCombine", conditioning.ConditioningCombine, "Conditioning (Combine)"),
    ("ConditioningConcat", conditioning.ConditioningConcat, "Conditioning (Concat)"),
    ("ConditioningSetArea", conditioning.ConditioningSetArea, "Conditioning (Set Area)"),
    ("ConditioningSetMask", conditioning.ConditioningSetMask, "Conditioning (Set Mask)"),
    ("KSamplerAdvanced", ksampler.KSamplerAdvanced, "KSampler (Advanced)"),
    ("SetLatentNoiseMask", latent.SetLatentNoiseMask, "Set Latent Noise Mask"),
    ("LatentComposite", latent.LatentComposite, "Latent Composite"),
    ("LoraLoader", lora.LoraLoader, "Load LoRA"),
    ("CLIPLoader", loaders.CLIPLoader, "Load CLIP"),
    ("UNETLoader", loaders.UNETLoader, "Load Diffusion Model"),
    ("LoraLoaderModelOnly", lora.LoraLoaderModelOnly, "LoraLoaderModelOnly"),
    ("ConditioningZeroOut", conditioning.ConditioningZeroOut, "ConditioningZeroOut"),
    ("VAEDecodeTiled", vae.VAEDecodeTiled, "VAE Decode (Tiled)"),
    ("VAEEncodeTiled", vae.VAEEncodeTiled, "VAE Encode (Tiled)"),
    ("PrimitiveInt", utility.PrimitiveInt, "Int"),
    ("PreviewAny", utility.PreviewAny, "Preview Any"),
]
