"""ComfyUI's ``comfy.ldm.lumina.model``: core_nodes' NextDiT (Lumina 2, Z-Image) and its parts.

ComfyUI's ``JointAttention`` and ``JointTransformerBlock`` are core_nodes'
``Attention`` and ``Block``; ``FeedForward`` (``w1``/``w2``/``w3``, SiLU-gated)
is the same layer, so calling ``FeedForward.forward`` on a model's layer works.
"""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["families.lumina2.nextdit"],
         aliases={"JointAttention": "Attention", "JointTransformerBlock": "Block"})
