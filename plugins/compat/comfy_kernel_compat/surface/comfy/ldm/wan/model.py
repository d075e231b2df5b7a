"""ComfyUI's ``comfy.ldm.wan.model``: core_nodes' Wan transformer under ComfyUI's class names.

One core_nodes class serves text-to-video and image-to-video cross attention
(the image keys exist only in the latter), so ``WanT2VCrossAttention`` and
``WanI2VCrossAttention`` are both ``CrossAttention``.
"""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["families.wan.transformer"],
         aliases={"WanModel": "WanTransformer", "WanAttentionBlock": "WanBlock", "WanSelfAttention": "SelfAttention",
                  "WanT2VCrossAttention": "CrossAttention", "WanI2VCrossAttention": "CrossAttention",
                  "VaceWanAttentionBlock": "VaceBlock", "MLPProj": "ImageProjection"})
